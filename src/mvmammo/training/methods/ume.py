"""UME, Uni-Modal Ensemble (Du et al., ICML 2023; methods.md section 4.9): two uni-view models, each trained
alone on its own view, whose predictions are averaged.

This is the Split family with a different loss: instead of the BCE of the averaged probability (which couples
the two columns through the average), each view's column and head minimise their own view's loss,

    L = BCE(logits_cc) + BCE(logits_mlo)        (each = benign + malignant mean BCE)

so no gradient crosses between the views (the CC head's gradient does not depend on the MLO image). The
model's output is unchanged: Split's ``logits`` = logit of the mean of the two uni-view probabilities, which is
the ensemble's prediction at validation and test. The fused BCE (Split's usual loss) is logged as loss_fused;
loss_benign/loss_malignant are the fused ones, so they mean what they mean for every other run.

Adaptations and notes:
  - Only model.family=split: it is the one family with a separate column AND head per view; Joint/Shared
    share the head (their per-view logits split its bias), so summing per-view losses there would not give
    two independent models.
  - A view's loss averages over the breasts whose view feeds the model in this step (view mask != 0):
    a missing view (data.missing_view=mask) or one that modality dropout drops leaves that breast out of that
    view's loss (the head would otherwise learn from an all-zero feature vector). Modality dropout's sample
    weight (moddrop_both=exclude) multiplies in.
  - Binary labels: nothing class-specific (plain BCE per label), as the reference's cross-entropy.
  - Resume: no state.
Logged per step in the loss dict: loss_cc, loss_mlo, loss_fused.
"""
from __future__ import annotations

import torch

from mvmammo.config import Config
from mvmammo.training.methods.base import Method, register_method
from mvmammo.training.tasks import bce_pair, targets

VIEWS = ("cc", "mlo")


def view_weight(view_mask: torch.Tensor | None, i: int, weight: torch.Tensor | None) -> torch.Tensor | None:
    """(B,) weight of view i's loss: 1 where the view feeds the model (mask != 0), times the sample weight."""
    if view_mask is None:
        return weight
    w = (view_mask[:, i] != 0).float()
    return w if weight is None else w * weight


def ume_loss(out: dict, batch: dict, view_mask: torch.Tensor | None = None) -> dict:
    y, weight = targets(batch), out.get("sample_weight")
    fused = bce_pair(out["logits"], y, weight)
    per = {v: bce_pair(out[f"logits_{v}"], y, view_weight(view_mask, i, weight))["loss"] for i, v in enumerate(VIEWS)}
    return {"loss": per["cc"] + per["mlo"], "loss_benign": fused["loss_benign"],
            "loss_malignant": fused["loss_malignant"], "loss_fused": fused["loss"],
            "loss_cc": per["cc"], "loss_mlo": per["mlo"]}


@register_method("ume")
class UME(Method):
    """Split ResNet trained as two independent uni-view models (sum of per-view losses)."""

    @classmethod
    def problems(cls, cfg: Config) -> list[str]:
        if cfg.model.family != "split":
            return [f"model.family={cfg.model.family}: reg.method=ume trains two independent uni-view models, "
                    "which is the Split family with per-view losses; set model.family=split"]
        return []

    def loss(self, out: dict, batch: dict, ctx) -> dict:
        return ume_loss(out, batch, getattr(ctx, "view_mask", None))
