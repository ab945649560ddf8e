"""Models: per-view columns, the multiview families and their registry.

``build_model(cfg.model, in_channels)`` is the entry point; see :mod:`.multiview` for the interface every
family shares and :mod:`.registry` for the parameter naming rule.
"""
from .registry import MODEL_FAMILIES, PARAMETER_GROUPS, build_model, parameter_group, register_model
from . import multiview  # noqa: F401  (registers the families)
from .backbones import backbone_names, build_backbone, register_backbone
from .multiview import VIEWS, MultiViewModel
from .resnet22 import ResNet22

__all__ = ["MODEL_FAMILIES", "PARAMETER_GROUPS", "VIEWS", "MultiViewModel", "ResNet22", "backbone_names",
           "build_backbone", "build_model", "parameter_group", "register_backbone", "register_model"]
