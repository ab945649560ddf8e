"""Regularizers that act inside the one loop, selected by config: modality dropout (a per-sample view mask
applied before fusion), model preparation (pretrained columns, freezing) and the hooks they need.

Modality dropout choices (methods.md section 3), with defaults:
  - each view's 512-d representation is dropped independently per sample with rate reg.moddrop_<view>;
  - reg.moddrop_rescale: "none" (default; kept views unscaled, so train and test logits differ only by a
    shift, which AUC ignores) or "inverted" (kept view divided by its keep rate, E[z] unchanged);
  - reg.moddrop_both: "resample" (default; a sample with both views dropped is redrawn from the
    conditional distribution given at least one kept, so every sample trains something), "exclude" (kept in
    the batch but weighted 0 in the loss) or "allowed" (z = 0, the logit is the bias);
  - never active in evaluation: the loop only asks for a mask in training steps.
"""
from __future__ import annotations

import torch

from mvmammo.config import Config, RegularizerConfig


def view_mask(reg: RegularizerConfig, batch: int, generator: torch.Generator, device: torch.device
              ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(mask (B, 2) for (cc, mlo) or None, sample weight (B,) or None)."""
    q = torch.tensor([reg.moddrop_cc, reg.moddrop_mlo], dtype=torch.float32)
    if float(q.max()) <= 0.0:
        return None, None
    if reg.moddrop_rescale not in ("none", "inverted"):
        raise ValueError(f"reg.moddrop_rescale={reg.moddrop_rescale!r}; use none or inverted")
    if reg.moddrop_both not in ("allowed", "exclude", "resample"):
        raise ValueError(f"reg.moddrop_both={reg.moddrop_both!r}; use allowed, exclude or resample")
    keep = (torch.rand(batch, 2, generator=generator) >= q).float()
    weight = None
    both = keep.sum(1) == 0
    if reg.moddrop_both == "resample" and bool(both.any()):
        # Conditional on at least one kept view: P(keep cc only) : P(keep mlo only) : P(both kept).
        p = torch.stack([(1 - q[0]) * q[1], q[0] * (1 - q[1]), (1 - q[0]) * (1 - q[1])])
        if float(p.sum()) <= 0:
            raise ValueError("reg.moddrop_both=resample needs a drop rate below 1 for at least one view")
        pick = torch.multinomial(p / p.sum(), int(both.sum()), replacement=True, generator=generator)
        table = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        keep[both] = table[pick]
    elif reg.moddrop_both == "exclude":
        weight = (~both).float().to(device)
    if reg.moddrop_rescale == "inverted":
        keep = keep / (1 - q).clamp(min=1e-6)
    return keep.to(device), weight


def prepare_model(model: torch.nn.Module, cfg: Config) -> None:
    """Initialise from pretrained uni-view runs when asked (see training/pretrain.py)."""
    if cfg.reg.pretrained_cc or cfg.reg.pretrained_mlo:
        from mvmammo.training.pretrain import load_pretrained

        load_pretrained(model, cfg)


def hooks(cfg: Config) -> list:
    """Hooks the config asks for: per-group gradient norms, Loss Change Allocation."""
    out = []
    if cfg.run.grad_norms:
        from mvmammo.analysis.grad_norms import GradNormHook

        out.append(GradNormHook())
    if cfg.run.lca:
        from mvmammo.analysis.lca import LCAHook

        out.append(LCAHook(cfg))
    return out
