"""Helpers every layer shares: atomic writes, the environment record, list parsing, precisions.

This package sits at the bottom of the layer order (beside :mod:`sfc_deploy.errors` and
:mod:`sfc_deploy.ops`) and imports nothing else from sfc-deploy but the errors.
"""
