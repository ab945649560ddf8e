"""Backbone registry: the per-view column is chosen by name (``ModelConfig.backbone``).

A backbone factory takes ``(in_channels, width)`` and returns an ``nn.Module`` that maps
(B, in_channels, H, W) -> (B, out_channels, h, w) and has an ``out_channels`` attribute; the model families
pool and project whatever it returns, so a new column needs no change anywhere else.

Registered here: ``resnet22`` (the paper's column) and ``tiny`` (two strided convolutions: a column for
tests and smoke runs, not for results). ``timm:<name>`` builds any timm model's feature extractor when timm
is installed (an optional dependency; ``width`` is ignored there).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

from .resnet22 import ResNet22

BackboneFactory = Callable[[int, int], nn.Module]
_BACKBONES: dict[str, BackboneFactory] = {}


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    def deco(factory: BackboneFactory) -> BackboneFactory:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} registered twice")
        _BACKBONES[name] = factory
        return factory

    return deco


def backbone_names() -> list[str]:
    return sorted(_BACKBONES)


def build_backbone(name: str, in_channels: int, width: int) -> nn.Module:
    """The column called ``name``; ``timm:<model>`` for timm models (needs timm installed)."""
    if name.startswith("timm:"):
        return _TimmColumn(name[len("timm:"):], in_channels)
    if name not in _BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; one of {backbone_names()} or 'timm:<model name>'")
    column = _BACKBONES[name](in_channels, width)
    if not isinstance(getattr(column, "out_channels", None), int):
        raise TypeError(f"backbone {name!r} must set an int attribute out_channels")
    return column


@register_backbone("resnet22")
def _resnet22(in_channels: int, width: int) -> nn.Module:
    return ResNet22(in_channels=in_channels, width=width)


class TinyColumn(nn.Module):
    """Two stride-2 conv-BN-ReLU layers: (B, C, H, W) -> (B, 2*width, ~H/4, ~W/4). For tests only."""

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.out_channels = 2 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


@register_backbone("tiny")
def _tiny(in_channels: int, width: int) -> nn.Module:
    return TinyColumn(in_channels, width)


class _TimmColumn(nn.Module):
    """A timm model without its classifier and pooling: the feature map of ``forward_features``."""

    def __init__(self, model_name: str, in_channels: int):
        super().__init__()
        try:
            import timm  # optional dependency, imported only when asked for
        except ImportError as exc:
            raise ImportError(f"backbone 'timm:{model_name}' needs timm: pip install timm") from exc
        self.net = timm.create_model(model_name, pretrained=False, in_chans=in_channels, num_classes=0,
                                     global_pool="")
        self.out_channels = int(self.net.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)  # (B, num_features, h, w)
