"""Exporters: one module per format (formats are data, see :mod:`sfc_deploy.export.formats`)."""
