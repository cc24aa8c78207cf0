"""Beyond one video: classify collections of videos (``sfc-deploy classify``).

:mod:`~sfc_deploy.scale.sources` turns INPUT (a CSV, a folder, a glob, a list file) into paths;
:mod:`~sfc_deploy.scale.classify` runs an export over them with decoding overlapped with inference,
one row per video (a bad video is a row with its error, never a crashed job), resumable.
"""
