"""Tasks: from a model's output dict and a batch to a loss dict. The loop only minimises ``loss``.

The breast has two independent binary labels (benign, malignant); the loss is the sum of the two binary
cross-entropies (SPEC section 3). Methods that need another loss register a task or replace the loss
(training/methods/). Split ResNet needs no special case: its ``logits`` already are the logit
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


def get_task(name: str) -> Callable:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; one of {sorted(TASKS)}")
    return TASKS[name]


def task_name(cfg) -> str:
    """The task a config asks for: gradient blending when reg.blend is set (registered by
    training/methods/blend.py), else the standard loss."""
    return "blend" if getattr(cfg.reg, "blend", "none") != "none" else "standard"
