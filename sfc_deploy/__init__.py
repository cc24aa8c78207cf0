"""sfc-deploy: Selective Feature Compression (Liu et al., ICCV 2021) for cheap video action recognition.

``import sfc_deploy`` never needs an optional backend (TensorRT, CUDA); those load lazily.
"""

from sfc_deploy.models import (
    BackboneConfig,
    SFCConfig,
    SFCModel,
    create_backbone,
    create_model,
    list_backbones,
)

__version__ = "0.1.0"

__all__ = ["BackboneConfig", "SFCConfig", "SFCModel", "create_backbone", "create_model", "list_backbones", "__version__"]
