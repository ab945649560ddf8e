"""Tasks: from a model's output dict and a batch to a loss dict. The loop only minimises ``loss``.

The breast has two independent binary labels (benign, malignant); the loss is the sum of the two binary
cross-entropies (SPEC section 3). Split ResNet needs no special case: its ``logits`` already are the logit
of the average of the two uni-view probabilities.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

TASKS: dict[str, Callable] = {}


def register_task(name: str):
    def wrap(fn):
        TASKS[name] = fn
        return fn

    return wrap


def targets(batch: dict) -> torch.Tensor:
    """(B, 2) float targets (benign, malignant)."""
    return torch.stack([batch["benign"], batch["malignant"]], dim=1).float()


def bce_pair(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-label mean BCE; weight (B,) masks samples out of the loss (e.g. both views dropped)."""
    per = F.binary_cross_entropy_with_logits(logits.float(), y, reduction="none")  # (B, 2)
    if weight is not None:
        denom = weight.sum().clamp(min=1.0)
        per = per * weight[:, None]
        means = per.sum(0) / denom
    else:
        means = per.mean(0)
    return {"loss_benign": means[0], "loss_malignant": means[1], "loss": means.sum()}


@register_task("standard")
def standard(out: dict, batch: dict, cfg=None) -> dict[str, torch.Tensor]:
    return bce_pair(out["logits"], targets(batch), out.get("sample_weight"))


@register_task("blend")
def blend(out: dict, batch: dict, cfg=None) -> dict[str, torch.Tensor]:
    """Gradient blending: L = w_cc L(aux_logits_cc) + w_mlo L(aux_logits_mlo) + w_joint L(logits).

    Each L is the task's loss (benign + malignant mean BCE, honouring the sample weight of modality
    dropout's "exclude" rule). The weights come from training/blend.py (reg.blend=fixed: reg.blend_weights;
    offline: reg.blend_weights_file), normalised to sum 1. ``loss_benign``/``loss_malignant`` are the
    joint head's, so they mean the same as in the standard task.
    """
    from mvmammo.training.blend import weights_for

    missing = [k for k in ("aux_logits_cc", "aux_logits_mlo") if k not in out]
    if missing:
        raise ValueError(f"reg.blend needs the per-view heads' outputs {missing}: set model.aux_heads=true on a "
                         "two-view model family")
    w_cc, w_mlo, w_joint = weights_for(cfg.reg)
    y, weight = targets(batch), out.get("sample_weight")
    joint = bce_pair(out["logits"], y, weight)
    cc = bce_pair(out["aux_logits_cc"], y, weight)["loss"]
    mlo = bce_pair(out["aux_logits_mlo"], y, weight)["loss"]
    total = w_cc * cc + w_mlo * mlo + w_joint * joint["loss"]
    return {"loss": total, "loss_benign": joint["loss_benign"], "loss_malignant": joint["loss_malignant"],
            "loss_joint": joint["loss"], "loss_cc": cc, "loss_mlo": mlo}


def get_task(name: str) -> Callable:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; one of {sorted(TASKS)}")
    return TASKS[name]


def task_name(cfg) -> str:
    """The task a config asks for: gradient blending when reg.blend is set, else the standard loss."""
    return "blend" if getattr(cfg.reg, "blend", "none") != "none" else "standard"
