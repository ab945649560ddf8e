"""Modality dropout (the paper's regularizer; docs/regularizers.md): a per-sample view mask applied before
fusion, switched on by reg.moddrop_cc / reg.moddrop_mlo > 0. With defaults:
  - each view's fc_dim representation h_v is dropped independently per sample with rate q_v =
    reg.moddrop_<view> in [0, 1];
  - reg.moddrop_both: "resample" (default; a sample with both views dropped is redrawn from the
    conditional distribution given at least one kept, so every sample trains something; the realised
    marginal drop rate of view v is then q_v (1 - q_other) / (1 - q_cc q_mlo), below q_v), "exclude" (kept
    in the batch but weighted 0 in the loss) or "allowed" (z = 0, the logit is the bias);
  - reg.moddrop_rescale: "none" (default; kept views unscaled, so train and test logits differ only by a
    shift, which AUC ignores) or "inverted" (a kept view divided by its keep probability, so E[z] in
    training equals z at test; under resample/exclude that probability is the one conditional on at least
    one view kept, (1 - q_v) / (1 - q_cc q_mlo), among the samples that train);
  - never active in evaluation: the loop asks for a mask only in training steps (predict passes none);
  - the realised rates are logged per epoch (moddrop_rate_cc, moddrop_rate_mlo, moddrop_rate_both).
"""
from __future__ import annotations

import torch

from mvmammo.config import Config, RegularizerConfig
from mvmammo.training.methods.base import Method, register_method

_KEEP_TABLE = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # keep cc only, keep mlo only, keep both


class DropStats:
    """Counts of realised drops since the last reset (CPU integers: logging costs no device sync).

    The loop's call ``view_mask(reg, batch, generator, device)`` is fixed, so the counts live here and
    :class:`ModDropRates` reads them once per epoch.
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.samples, self.dropped_cc, self.dropped_mlo, self.dropped_both = 0, 0, 0, 0

    def add(self, keep: torch.Tensor) -> None:
        dropped = keep == 0  # (B, 2)
        self.samples += int(keep.shape[0])
        self.dropped_cc += int(dropped[:, 0].sum())
        self.dropped_mlo += int(dropped[:, 1].sum())
        self.dropped_both += int(dropped.all(1).sum())

    def rates(self) -> dict[str, float]:
        n = max(self.samples, 1)
        return {"moddrop_rate_cc": self.dropped_cc / n, "moddrop_rate_mlo": self.dropped_mlo / n,
                "moddrop_rate_both": self.dropped_both / n, "moddrop_samples": self.samples}


DROP_STATS = DropStats()


def _check(reg: RegularizerConfig) -> torch.Tensor:
    q = torch.tensor([reg.moddrop_cc, reg.moddrop_mlo], dtype=torch.float32)  # (2,) drop rates (cc, mlo)
    if bool((q < 0).any()) or bool((q > 1).any()):
        raise ValueError(f"reg.moddrop_cc/moddrop_mlo are drop rates in [0, 1], got {q.tolist()}")
    if reg.moddrop_rescale not in ("none", "inverted"):
        raise ValueError(f"reg.moddrop_rescale={reg.moddrop_rescale!r}; use none or inverted")
    if reg.moddrop_both not in ("allowed", "exclude", "resample"):
        raise ValueError(f"reg.moddrop_both={reg.moddrop_both!r}; use allowed, exclude or resample")
    if reg.moddrop_both == "resample" and float(q.min()) >= 1.0:
        raise ValueError("reg.moddrop_both=resample needs a drop rate below 1 for at least one view")
    return q


def keep_probability(reg: RegularizerConfig) -> torch.Tensor:
    """(2,) probability that each view is kept, among the samples that train (see the module doc)."""
    q = _check(reg)
    keep = 1 - q
    if reg.moddrop_both in ("resample", "exclude"):
        keep = keep / (1 - q[0] * q[1]).clamp(min=1e-12)  # conditional on not both dropped
    return keep


def view_mask(reg: RegularizerConfig, batch: int, generator: torch.Generator, device: torch.device
              ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(mask (B, 2) for (cc, mlo) or None, sample weight (B,) or None). Draws from ``generator`` only."""
    if reg.moddrop_cc <= 0.0 and reg.moddrop_mlo <= 0.0:
        return None, None
    q = _check(reg)
    keep = (torch.rand(batch, 2, generator=generator) >= q).float()  # (B, 2): 1 kept, 0 dropped
    weight = None
    both = keep.sum(1) == 0
    if reg.moddrop_both == "resample" and bool(both.any()):
        # Conditional on at least one kept view: P(keep cc only) : P(keep mlo only) : P(both kept).
        p = torch.stack([(1 - q[0]) * q[1], q[0] * (1 - q[1]), (1 - q[0]) * (1 - q[1])])
        pick = torch.multinomial(p / p.sum(), int(both.sum()), replacement=True, generator=generator)
        keep[both] = _KEEP_TABLE[pick]
    elif reg.moddrop_both == "exclude":
        weight = (~both).float().to(device)
    DROP_STATS.add(keep)
    if reg.moddrop_rescale == "inverted":
        keep = keep / keep_probability(reg).clamp(min=1e-6)
    return keep.to(device), weight


class ModDropRates:
    """Hook: the realised per-view drop rates of the epoch's training samples, in the epoch line."""

    def on_train_start(self, ctx) -> dict:
        DROP_STATS.reset()
        return {}

    def on_epoch_end(self, ctx) -> dict:
        out = DROP_STATS.rates()
        DROP_STATS.reset()
        return out


@register_method("moddrop")
class ModDrop(Method):
    """The loop's view mask from the realised drops, and their per-epoch rates in the epoch line."""

    @classmethod
    def active(cls, cfg: Config) -> bool:
        return cfg.reg.moddrop_cc > 0 or cfg.reg.moddrop_mlo > 0

    @classmethod
    def problems(cls, cfg: Config) -> list[str]:
        try:
            _check(cfg.reg)
        except ValueError as exc:
            return [str(exc)]
        return []

    def hooks(self) -> list:
        return [ModDropRates()]

    def view_mask(self, ctx, n: int, generator: torch.Generator, device: torch.device):
        return view_mask(self.cfg.reg, n, generator, device)
