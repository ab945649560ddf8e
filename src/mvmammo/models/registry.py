"""Model families by name: ``@register_model("joint")`` on a class, ``build_model(cfg, in_channels)``.

Tests iterate :data:`MODEL_FAMILIES`, so a family is tested the day it is registered.

Parameter naming rule (all families; optimizers, freezing, gradient norms and LCA select by prefix):
  - a parameter that acts on one view only lives under that view: ``cc.`` or ``mlo.`` (its column, its FC,
    and in uni-view and Split models its own output layer);
  - a parameter that acts on both views lives under ``shared.`` (the fused output layer of Joint/Shared,
    the one column of Shared);
  - gradient blending's extra heads live under ``aux_cc.`` and ``aux_mlo.``.
:func:`parameter_group` maps a name to one of the three groups of the paper's analyses and of split
learning rates: ``cc``, ``mlo``, ``shared``. An auxiliary head reads one view only, so it belongs to that
view's group (aux_cc -> cc, aux_mlo -> mlo); the optimizer uses this same rule (training/optim.py).
"""
from __future__ import annotations

from typing import Callable, TypeVar

from torch import nn

from ..config import ModelConfig

PARAMETER_GROUPS = ("cc", "mlo", "shared", "aux_cc", "aux_mlo")

_MODELS: dict[str, Callable[[ModelConfig, int], nn.Module]] = {}
MODEL_FAMILIES: list[str] = []  # registration order; filled as the family modules are imported

T = TypeVar("T")


def register_model(name: str) -> Callable[[T], T]:
    """Class decorator: the class is built as ``cls(cfg, in_channels)``."""

    def deco(cls: T) -> T:
        if name in _MODELS:
            raise ValueError(f"model family {name!r} registered twice")
        _MODELS[name] = cls  # type: ignore[assignment]
        MODEL_FAMILIES.append(name)
        return cls

    return deco


def build_model(cfg: ModelConfig, in_channels: int) -> nn.Module:
    """The model of family ``cfg.family`` for inputs with ``in_channels`` channels (1: image, 3: +heatmaps)."""
    if cfg.family not in _MODELS:
        raise ValueError(f"unknown model family {cfg.family!r}; one of {MODEL_FAMILIES}")
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 (image) or 3 (image + 2 heatmaps), got {in_channels}")
    return _MODELS[cfg.family](cfg, in_channels)


def parameter_group(name: str) -> str:
    """'cc.column.stem.weight' -> 'cc', 'aux_mlo.head.bias' -> 'mlo', 'shared.head.weight' -> 'shared';
    raises for a name outside the naming rule (whose prefixes are PARAMETER_GROUPS)."""
    prefix = name.split(".", 1)[0]
    if prefix not in PARAMETER_GROUPS:
        raise ValueError(f"parameter {name!r} is outside the groups {PARAMETER_GROUPS}")
    return prefix[len("aux_"):] if prefix.startswith("aux_") else prefix
