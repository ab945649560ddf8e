"""OPM-style adaptive modality dropout (Wei, Hu et al., the TPAMI extension of OGM-GE; methods.md 3(a), 3(c)).

Per training step, as implemented (cfg.methods.opm: q_base = 0.4, alpha = 0.5, p_exe = 0.7):
  1. rho_cc = s_cc / s_mlo, rho_mlo = 1 / rho_cc: OGM's score ratio, class-balanced (view_scores.py: per label the
     true-class probability of each view's logit z_v = out["logits_<v>"] (sum fusion: W h_v + b/2, OGM's split;
     Split: each view's own head), mean over positives and over negatives averaged, then over both labels); under
     torchrun the score's sums are all-reduced, so every rank gets the same rho and the same drop rates).
  2. Drop rates: q_m = clip(q_base (1 + alpha tanh(relu(rho_m - 1))), 0, 1) for the dominant view (rho_m > 1),
     q_m = 0 for the other; rho = 1 exactly: no view is dominant, nothing is dropped.
  3. With probability p_exe the drop step runs: each sample keeps view m with probability 1 - q_m (independent
     per sample), and every kept feature is scaled by 1 / (1 - theta), theta = sum_m d_m q_m / sum_m d_m the
     dimension-weighted drop rate (d_m = model.fc_dim for both views, so theta = (q_cc + q_mlo) / 2 <= 1/2).
     Otherwise (probability 1 - p_exe) the step trains on both views unscaled.
The mask multiplies h_v before fusion (the loop's view_mask), in training only; evaluation never drops.

Adaptations and choices (documented in docs/balance.md):
  - rho comes from the PREVIOUS step's logits (stored here), because the loop draws the mask before the forward
    pass; BalanceBenchmark's OPM_trainer scores the current batch from its un-dropped forward and then re-runs
    only the fusion head on the dropped features (which would make OPM own the loss here, and so not combine
    with another method that does). The previous step's logits were computed on
    masked, rescaled features, so they are first brought back to the unmasked scale: with a linear head,
    z_v = c_v + m_v W h_v, where c_v is the view's logit at h_v = 0 (b/2; Split: b_v) and m_v the mask value,
    so z_v(unmasked) = c_v + (z_v - c_v) / m_v; only samples with both views kept enter the scores (a dropped
    view has no logit to score).
  - rho is reset to 1 at the first step of every epoch (that step drops nothing). This makes the state a
    function of (seed, epoch, step): a run resumed after epoch e continues exactly like the uninterrupted one.
  - "Both views dropped" cannot happen: only the dominant view has q > 0, and a uniform draw u in [0, 1) is
    always >= 0 = q of the other view. Breasts with one view (data.missing_view=mask) never lose their only view.
  - Randomness: two draws per step from the loop's generator (the exe coin and an (n, 2) uniform table), always
    made whatever rho is, so the generator's stream (shared with the augmentation boxes) does not depend on
    OPM's decisions. No host synchronisation: rho, q and the mask stay on the device.
  - Families: joint, shared, split (a mask on h_v works for all); uni-view families are refused. Combined with
    the paper's modality dropout (reg.moddrop_*), "both dropped" could happen and the two rules would fight:
    refused.
Logged per step: opm_rho_cc (the rho that set this step's rates), opm_q_cc, opm_q_mlo, opm_theta, opm_exe (1 if
the drop step ran), opm_drop_cc, opm_drop_mlo (fraction of the batch whose view was dropped).
"""
from __future__ import annotations

import torch

from mvmammo.config import Config
from mvmammo.training.methods.base import Method, register_method
from mvmammo.training.methods.view_scores import (balanced_scores, score_ratio, true_class_probability,
                                                     two_view_problems)
from mvmammo.training.tasks import targets



def drop_rates(rho_cc: torch.Tensor, q_base: float, alpha: float) -> torch.Tensor:
    """(2,) drop rates (q_cc, q_mlo) for the score ratio rho_cc (rho_mlo = 1 / rho_cc)."""
    rho = torch.stack([rho_cc, 1.0 / rho_cc.clamp(min=1e-12)]).float()  # (2,) rho_cc, rho_mlo
    q = (q_base * (1 + alpha * torch.tanh(torch.relu(rho - 1)))).clamp(0.0, 1.0)
    return torch.where(rho > 1, q, torch.zeros_like(q))


def drop_theta(q: torch.Tensor, dims: tuple[int, int]) -> torch.Tensor:
    """theta = sum_m d_m q_m / sum_m d_m, the dimension-weighted drop rate."""
    d = torch.tensor(dims, dtype=q.dtype, device=q.device)
    return (d * q).sum() / d.sum()


def opm_mask(u_exe: torch.Tensor, u: torch.Tensor, q: torch.Tensor, p_exe: float, dims: tuple[int, int],
             present: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(mask (n, 2) or None when the drop step does not run, theta) from the draws u_exe (0-d) and u (n, 2).

    keep_v = u_v >= q_v (so P(keep) = 1 - q_v); present (n, 2): a view whose partner is absent is kept.
    Kept entries are 1 / (1 - theta), dropped ones 0.
    """
    if not bool(u_exe < p_exe):  # CPU draw: no device synchronisation
        return None, torch.zeros((), device=q.device)
    keep = (u.to(q.device) >= q).float()  # (n, 2)
    if present is not None:
        alone = 1 - present.float().to(q.device).flip(1)  # (n, 2): 1 where the other view is absent
        keep = torch.maximum(keep, alone)
    theta = drop_theta(q, dims)
    return keep / (1 - theta), theta


def unmasked_view_logits(z: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """z_v as if h_v had not been masked: c + (z - c) / m where m > 0 (rows with m = 0 are left as they are).

    z: (B, 2) logits of one view as fused; offset c: (1, 2) its logit at h_v = 0; mask: (B,) that view's mask.
    """
    if mask is None:
        return z.float()
    m = mask.float()[:, None]
    return torch.where(m > 0, offset + (z.float() - offset) / m.clamp(min=1e-12), z.float())


@register_method("opm")
class OPM(Method):
    """Adaptive dropout of the dominant view's features (see the module doc)."""

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.rho: torch.Tensor | None = None  # 0-d rho_cc for the next step's mask (device)
        self.epoch: int | None = None
        self.log: dict = {}

    @classmethod
    def problems(cls, cfg: Config) -> list[str]:
        c, out = cfg.methods.opm, []
        out += two_view_problems(cfg, "opm")
        if not 0.0 <= c.q_base <= 1.0:
            out.append(f"methods.opm.q_base={c.q_base}: a drop rate, use a value in [0, 1]")
        if c.alpha < 0:
            out.append(f"methods.opm.alpha={c.alpha}: use a value >= 0")
        if not 0.0 <= c.p_exe <= 1.0:
            out.append(f"methods.opm.p_exe={c.p_exe}: a probability, use a value in [0, 1]")
        if cfg.reg.moddrop_cc > 0 or cfg.reg.moddrop_mlo > 0:
            out.append("reg.method=opm is adaptive modality dropout: set reg.moddrop_cc=0 and reg.moddrop_mlo=0")
        return out

    def hooks(self) -> list:
        return [_OPMHook(self)]

    def view_mask(self, ctx, n: int, generator: torch.Generator, device: torch.device):
        if self.epoch != ctx.epoch or self.rho is None:  # a new epoch (or a resume): no dominant view yet
            self.epoch, self.rho = ctx.epoch, torch.ones((), device=device)
        c = self.cfg.methods.opm
        u_exe = torch.rand((), generator=generator)
        u = torch.rand(n, 2, generator=generator)
        q = drop_rates(self.rho, c.q_base, c.alpha)
        present = ctx.batch.get("present") if ctx.batch is not None else None
        dims = (self.cfg.model.fc_dim, self.cfg.model.fc_dim)
        mask, theta = opm_mask(u_exe, u, q, c.p_exe, dims, present)
        dropped = torch.zeros(2, device=device) if mask is None else (mask == 0).float().mean(0)
        self.log = {"opm_rho_cc": self.rho, "opm_q_cc": q[0], "opm_q_mlo": q[1], "opm_theta": theta,
                    "opm_exe": float(mask is not None), "opm_drop_cc": dropped[0], "opm_drop_mlo": dropped[1]}
        return mask, None

    def update_rho(self, model, out: dict, batch: dict, view_mask: torch.Tensor | None) -> torch.Tensor:
        """rho_cc from this step's per-view logits (unmasked scale, samples with both views kept)."""
        with torch.no_grad():
            h = out["h_cc"]
            zero = torch.zeros(1, h.shape[1], device=h.device, dtype=torch.float32)
            offsets = model.fuse(h_cc=zero, h_mlo=zero)  # each view's logit at h_v = 0, (1, 2)
            y = targets(batch).to(h.device)
            z = []
            for i, v in enumerate(("cc", "mlo")):
                m = None if view_mask is None else view_mask[:, i]
                z.append(unmasked_view_logits(out[f"logits_{v}"], offsets[f"logits_{v}"].float(), m))
            both = None if view_mask is None else ((view_mask > 0).all(1)).float()
            zz = torch.stack(z)  # (2, B, L)
            s, ok = balanced_scores(true_class_probability(zz, y[None]), y, both)  # all-reduced under torchrun
            prev = self.rho if self.rho is not None else torch.ones((), device=h.device)
            self.rho = score_ratio(s[0], s[1], ok.all(), prev)
        return self.rho


class _OPMHook:
    """after_backward (before the optimizer step, so the head that made the logits is the one read): the next
    step's rho from this step's logits, and this step's rates in the step line."""

    def __init__(self, method: OPM):
        self.m = method

    def after_backward(self, ctx) -> dict:
        self.m.update_rho(ctx.model, ctx.out, ctx.batch, ctx.view_mask)
        return dict(self.m.log)
