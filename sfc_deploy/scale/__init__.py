"""Beyond one video: collections (``sfc-deploy classify``) and online serving (``sfc-deploy serve``).

:mod:`~sfc_deploy.scale.sources` turns INPUT (a CSV, a folder, a glob, a list file) into paths;
:mod:`~sfc_deploy.scale.classify` runs an export over them, one row per video (a bad video is a row
with its error, never a crashed job), resumable, on local threads or on Ray Data
(:mod:`~sfc_deploy.scale.ray_engine`); :mod:`~sfc_deploy.scale.serve` answers HTTP requests on Ray
Serve, with :mod:`~sfc_deploy.scale.client` as its standard-library client. Every row and answer is
made by :mod:`~sfc_deploy.scale.rows`, the same way.
"""
