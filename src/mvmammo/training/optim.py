"""Optimizer structure as data: parameter groups picked by name prefix, each with its own learning rate.

Groups follow the shared vocabulary and one rule (models/registry.parameter_group): ``cc`` (CC column +
FC, and gradient blending's CC head), ``mlo`` (the same for MLO) and ``shared`` (what reads both views:
the fused output layer, the Shared family's one column). Split learning rates set
lr_g = optim.lr * 10**optim.alpha_g (SPEC section 4); the loop logs each group's rate as lr_<group>.

Frozen parameters get no group at all, so Adam never touches them (not even weight decay): those under an
``optim.freeze`` prefix, and those a regularizer froze before (requires_grad False, e.g. reg.finetune=head).
"""
from __future__ import annotations

import torch
from torch import nn

from mvmammo.config import OptimConfig
from mvmammo.models.registry import parameter_group

GROUPS = ("shared", "cc", "mlo")
_WRAPPERS = ("module.", "_orig_mod.")  # DistributedDataParallel / torch.compile name prefixes


def group_of(name: str) -> str:
    """Learning-rate group of a parameter name: cc, mlo or shared (aux_cc -> cc, aux_mlo -> mlo)."""
    while name.startswith(_WRAPPERS):
        name = name.split(".", 1)[1]
    return parameter_group(name)


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
        if not p.requires_grad:
            continue
        params[group_of(name)].append(p)
    groups = [{"params": ps, "lr": lrs[g], "name": g} for g, ps in params.items() if ps]
    if not groups:
        raise ValueError(f"every parameter is frozen (optim.freeze={cfg.freeze}, or reg.finetune=head on a model "
                         "without an output layer); nothing would train")
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def current_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    return {g.get("name", str(i)): g["lr"] for i, g in enumerate(optimizer.param_groups)}
