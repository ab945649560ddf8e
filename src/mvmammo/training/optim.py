"""Optimizer structure as data: parameter groups picked by name prefix, each with its own learning rate.

Groups follow the shared vocabulary: ``cc`` (CC column + FC), ``mlo`` (MLO column + FC) and ``shared``
(everything else: a shared column, the fused output layer, auxiliary heads). Split learning rates set
lr_g = lr * 10**alpha_g (SPEC section 4). Frozen prefixes get requires_grad=False and no group at all, so
Adam never touches them (not even weight decay).
"""
from __future__ import annotations

import torch
from torch import nn

from mvmammo.config import OptimConfig

GROUPS = ("shared", "cc", "mlo")


def group_of(name: str) -> str:
    """Parameter group of a parameter name (prefix before the first dot; aux_cc -> cc, aux_mlo -> mlo)."""
    head = name.split(".", 1)[0]
    if head in ("cc", "aux_cc"):
        return "cc"
    if head in ("mlo", "aux_mlo"):
        return "mlo"
    return "shared"


def is_frozen(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p.rstrip(".") + ".") for p in prefixes)


def group_lrs(cfg: OptimConfig) -> dict[str, float]:
    return {"shared": cfg.lr * 10 ** cfg.alpha_shared, "cc": cfg.lr * 10 ** cfg.alpha_cc,
            "mlo": cfg.lr * 10 ** cfg.alpha_mlo}


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    lrs = group_lrs(cfg)
    params: dict[str, list[nn.Parameter]] = {g: [] for g in GROUPS}
    for name, p in model.named_parameters():
        if is_frozen(name, cfg.freeze):
            p.requires_grad_(False)
            continue
        params[group_of(name)].append(p)
    groups = [{"params": ps, "lr": lrs[g], "name": g} for g, ps in params.items() if ps]
    if not groups:
        raise ValueError(f"optim.freeze={cfg.freeze} freezes every parameter; nothing would train")
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def current_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    return {g.get("name", str(i)): g["lr"] for i, g in enumerate(optimizer.param_groups)}
