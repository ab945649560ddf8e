"""AGM: adaptive gradient modulation (Li et al., ICCV 2023; official code Lingy12/AGM_ICCV2023,
run/*_main.py : train; methods.md section 4.4), for the two views of a breast.

Per training step, after the backward pass and before the optimizer step:

  o_cc    = 0.5 (f(cc, mlo) - f(0, mlo) + f(cc, 0))      Shapley-style mono response of CC (o_mlo symmetric),
                                                         f the fused logits, 0 = that view's features zeroed
  s_v     = class-balanced mean BCE of o_v (view_scores.py: per label, mean over positives and over negatives
            averaged, then averaged over the two labels)
  r_v     = exp(2 (mean_u s_u - s_v)),   r*_v = exp(2 (mean_u sbar_u - sbar_v))
  kappa_v = exp(alpha (r*_v - r_v))
  g       <- kappa_v g   for every parameter of view v (prefix cc./mlo.), in epochs start_epoch <= e < end_epoch
  sbar_v  <- cumulative mean of s_v over all steps so far (updated after kappa is computed, in and outside the
             window; 0 before the first step, so r* = 1 at the first step), as the official code
  clip the total gradient norm at 1 (AGM_GRAD_CLIP) when optim.grad_clip = 0; a positive optim.grad_clip (the
  loop's clip, right after this hook) replaces it.

Direction (the official one; BalanceBenchmark's AGM_trainer inverts it). s is a loss, so the view that is
ahead has the LOWER s: s_cc < mean  =>  r_cc > 1. When CC is ahead of where it usually is (s_cc - s_mlo below
its running value sbar_cc - sbar_mlo) then r_cc > r*_cc and kappa_cc < 1: the dominant view is slowed down,
and the other view, r_mlo < r*_mlo, gets kappa_mlo > 1. With two views r_cc = exp(s_mlo - s_cc) = 1 / r_mlo.

Mono responses without extra forward passes. Zero padding here zeroes the view's FEATURES h_v (what the model's
view_mask does), not its input image as the official code does (a zero image still gives non-zero features
after BatchNorm and biases, and would cost two more column passes per step). Then:
  - Sum fusion with a linear head (Joint, Shared): f(cc, mlo) = W (h_cc + h_mlo) + b, f(0, mlo) = W h_mlo + b,
    f(cc, 0) = W h_cc + b, so
        o_cc = 0.5 (W h_cc + W h_mlo + b - W h_mlo - b + W h_cc + b) = W h_cc + b/2 = logits_cc,
    i.e. AGM's mono response IS the model's per-view logit z_v (OGM's split of the head); nothing to compute.
  - Split: f = logit(mean(sigmoid(a_cc), sigmoid(a_mlo))) with a_v = head_v(h_v), and a zeroed view's head gives
    its bias b_v, so f(cc, 0) = f(a_cc, b_mlo): three head-only evaluations (model.fuse), no column pass.
tests/test_method_agm.py checks both against forwards with the view zeroed by view_mask.

Other adaptations: BCE per binary label instead of softmax CE; class-balanced means (malignancy is rare);
samples whose view was not fused (modality dropout, missing view) left out of that view's score; scores
all-reduced under torchrun (equal kappa on every rank). Shared family: the column is shared by both views, its
gradient is the sum of both views' contributions and one backward pass cannot separate them, so kappa scales
only the per-view FCs there (Joint and Split: column and FC, Split also its per-view head). The official code
clips only when the maximum entry of one projection layer's gradient exceeds 1 (a quirk of its model); we clip
every step. Under Adam (our optimizer) a kappa that stays constant over many steps is largely undone by the
per-parameter second-moment normalisation; only its variation and the clip change the update.
Numerical guard: |alpha (r* - r)| is capped at KAPPA_LOG_MAX, which sane runs never reach.

Resume: sbar and its per-view counts go into last.pt at every epoch end (state_dict) and are restored, so a
resumed run continues exactly; a last.pt without them restarts the running means from 0 and a line says so.
Under torchrun the scores are all-reduced before sbar is updated, so sbar is the same on every rank (rank 0's
goes into last.pt).
Logged per step: agm_score_{cc,mlo}, agm_ratio_{cc,mlo} (r), agm_ratio_star_{cc,mlo} (r*), agm_kappa_{cc,mlo}
(as applied: 1 outside the window); per epoch: agm_mean_{cc,mlo} (sbar).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mvmammo.config import Config
from mvmammo.training.methods.base import Method, register_method
from mvmammo.training.methods.view_scores import (VIEWS, balanced_scores, epoch_window_problems, scale_view_grads,
                                                  two_view_problems, view_weights)
from mvmammo.training.tasks import targets

AGM_GRAD_CLIP = 1.0  # total gradient-norm clip of the official code (used when optim.grad_clip = 0)
KAPPA_LOG_MAX = 10.0  # |log kappa| cap: a guard against exp overflow only (kappa in [4.5e-5, 2.2e4])


def is_sum_fusion(model: torch.nn.Module) -> bool:
    """Joint and Shared: one linear head on h_cc + h_mlo (``shared.head``)."""
    shared = getattr(model, "shared", None)
    return shared is not None and "head" in shared


def padded_logits(model: torch.nn.Module, out: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(f(cc, mlo), f(0, mlo), f(cc, 0)), each (B, 2), from the head alone on the fused features."""
    h_cc, h_mlo = out["h_cc"].detach().float(), out["h_mlo"].detach().float()
    both = model.fuse(h_cc=h_cc, h_mlo=h_mlo)["logits"]
    no_cc = model.fuse(h_cc=torch.zeros_like(h_cc), h_mlo=h_mlo)["logits"]
    no_mlo = model.fuse(h_cc=h_cc, h_mlo=torch.zeros_like(h_mlo))["logits"]
    return both, no_cc, no_mlo


def mono_responses(model: torch.nn.Module, out: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(o_cc, o_mlo), each (B, 2), detached (module doc: for sum fusion they are the per-view logits)."""
    if is_sum_fusion(model):
        return out["logits_cc"].detach().float(), out["logits_mlo"].detach().float()
    both, no_cc, no_mlo = padded_logits(model, out)
    return 0.5 * (both - no_cc + no_mlo), 0.5 * (both - no_mlo + no_cc)


def agm_scores(model, out: dict, batch: dict, view_mask) -> tuple[torch.Tensor, torch.Tensor]:
    """(s (2,) for (cc, mlo), valid (2,)): class-balanced mean BCE of the mono responses."""
    y = targets(batch).to(out["logits"].device)
    o = mono_responses(model, out)
    q = torch.stack([F.binary_cross_entropy_with_logits(o_v, y, reduction="none") for o_v in o])  # (2, B, 2)
    return balanced_scores(q, y, view_weights(out, view_mask, y.shape[0], y.device))


def agm_coefficients(s: torch.Tensor, s_bar: torch.Tensor, alpha: float) -> dict[str, torch.Tensor]:
    """r (2,), r* (2,) and kappa (2,) from the step's scores s (2,) and the running means s_bar (2,)."""
    s, s_bar = torch.as_tensor(s, dtype=torch.float32), torch.as_tensor(s_bar, dtype=torch.float32)
    r = torch.exp(2 * (s.mean() - s))
    r_star = torch.exp(2 * (s_bar.mean() - s_bar))
    kappa = torch.exp((alpha * (r_star - r)).clamp(-KAPPA_LOG_MAX, KAPPA_LOG_MAX))
    return {"r": r, "r_star": r_star, "kappa": kappa}


class AGMModulation:
    """Loop hook: the step's scores and kappas, the modulated and clipped gradients, the running means."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.p = cfg.methods.agm
        self.mean = self.count = None  # (2,) running means sbar and (2,) numbers of steps in them

    def _reset(self, device) -> None:
        self.mean = torch.zeros(2, device=device)
        self.count = torch.zeros(2, device=device)

    def on_train_start(self, ctx) -> dict:
        device = next(ctx.model.parameters()).device
        self._reset(device)
        state, self._resumed = getattr(self, "_resumed", None), None
        if state is not None:
            mean = torch.as_tensor(state["mean"], dtype=torch.float32).flatten()
            count = torch.as_tensor(state["count"], dtype=torch.float32).flatten()
            if mean.numel() == 2 and count.numel() == 2 and bool(torch.isfinite(torch.cat([mean, count])).all()):
                self.mean, self.count = mean.to(device), count.to(device)
                return {}
        if ctx.epoch > 0:
            print(f"{ctx.run_dir}: last.pt holds no AGM running means; they restart from 0 at this resume")
        return {}

    def state_dict(self) -> dict:
        return {} if self.mean is None else {"mean": self.mean.detach().cpu(), "count": self.count.detach().cpu()}

    def load_state_dict(self, state: dict) -> None:
        self._resumed = state if {"mean", "count"} <= set(state) else None

    def active_epoch(self, epoch: int) -> bool:
        return self.p.start_epoch <= epoch < self.p.end_epoch

    def after_backward(self, ctx) -> dict:
        if self.mean is None:  # used without on_train_start (tests)
            self._reset(next(ctx.model.parameters()).device)
        with torch.no_grad():
            s, valid = agm_scores(ctx.model, ctx.out, ctx.batch, ctx.view_mask)
            c = agm_coefficients(s, self.mean, self.p.alpha)
            ok = valid.all()  # a view with no fused sample this step: kappa 1, no running-mean update
            kappa = torch.where(ok, c["kappa"], torch.ones_like(c["kappa"]))
            if self.active_epoch(ctx.epoch):
                scale_view_grads(ctx.model, dict(zip(VIEWS, kappa)))
            else:
                kappa = torch.ones_like(kappa)
            self.count = self.count + ok.float()
            self.mean = torch.where(ok, self.mean + (s - self.mean) / self.count.clamp(min=1), self.mean)
        if self.cfg.optim.grad_clip <= 0:
            torch.nn.utils.clip_grad_norm_(ctx.model.parameters(), AGM_GRAD_CLIP)
        return {"agm_score_cc": s[0], "agm_score_mlo": s[1], "agm_ratio_cc": c["r"][0], "agm_ratio_mlo": c["r"][1],
                "agm_ratio_star_cc": c["r_star"][0], "agm_ratio_star_mlo": c["r_star"][1],
                "agm_kappa_cc": kappa[0], "agm_kappa_mlo": kappa[1]}

    def on_epoch_end(self, ctx) -> dict:
        mean = self.mean.tolist()
        return {"agm_mean_cc": mean[0], "agm_mean_mlo": mean[1]}


@register_method("agm")
class AGM(Method):
    """Adaptive gradient modulation of both views' encoders (module doc)."""

    @classmethod
    def problems(cls, cfg: Config) -> list[str]:
        p = cfg.methods.agm
        out = two_view_problems(cfg, "agm")
        if not (math.isfinite(p.alpha) and p.alpha > 0):
            out.append(f"methods.agm.alpha={p.alpha}: must be > 0 (BalanceBenchmark uses 0.1)")
        return out + epoch_window_problems("agm", p.start_epoch, p.end_epoch)

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.hook = AGMModulation(cfg)  # holds the running means that state_dict carries across epochs

    def hooks(self) -> list:
        return [self.hook]

    def state_dict(self) -> dict:
        return self.hook.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.hook.load_state_dict(state)
