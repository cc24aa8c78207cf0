"""Backbones (registered by name), the head/tail split and the SFC module."""

from sfc_deploy.models.config import SPLITS, STAGES, BackboneConfig, Preprocess
from sfc_deploy.models.factory import create_backbone, create_model
from sfc_deploy.models.registry import get_config, list_backbones, register_backbone
from sfc_deploy.models.sfc import SFC, SFCConfig, compressed_length, parse_tau
from sfc_deploy.models.sfc_model import SFCModel, read_sfc_checkpoint, save_sfc_checkpoint

__all__ = [
    "SPLITS", "STAGES", "BackboneConfig", "Preprocess", "create_backbone", "get_config", "list_backbones",
    "register_backbone", "SFC", "SFCConfig", "compressed_length", "parse_tau", "SFCModel", "create_model",
    "read_sfc_checkpoint", "save_sfc_checkpoint",
]
