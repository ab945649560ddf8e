"""OGM-GE: on-the-fly gradient modulation with generalization enhancement (Peng et al., CVPR 2022;
methods.md section 4.1), for the two views of a breast.

Per training step, after the backward pass and before the optimizer step:

  p_v,il  = sigmoid(z_v,il) if y_il = 1 else 1 - sigmoid(z_v,il)    probability of the true class, view v,
                                                                     breast i, label l in (benign, malignant)
  s_v     = class-balanced mean of p_v over the batch (view_scores.py: per label, mean over positives and over
            negatives averaged; then averaged over the two labels)
  rho_cc  = s_cc / s_mlo,  rho_mlo = 1 / rho_cc
  k_v     = 1 - tanh(alpha * rho_v)  if rho_v > 1 (the dominant view),  else 1
  g       <- k_v g + GE noise                    for every parameter g of view v's encoder
  GE noise = N(0, (std(g) + 1e-8)^2) elementwise, std over the tensor's unscaled gradient, on every 4-D (conv)
            weight of both views' encoders (ge=true)

only in epochs start_epoch <= epoch < end_epoch (methods.ogm_ge; 0-based, end exclusive; the official code's
window is inclusive at both ends). Defaults: alpha 0.3 (BalanceBenchmark; the official code has no default),
window 0..50 (official), ge on.

Per-view logits. Sum fusion (Joint, Shared): z_v = W h_v + b/2 (``logits_cc``/``logits_mlo``, they add up to
the fused logits), the official code's split of the shared head. Split: z_v is view v's own head.

Adaptations and choices (docs/balance.md):
  - Binary labels: softmax-of-the-true-class becomes the sigmoid probability of each label's true class, and
    the batch sum becomes a class-balanced mean (malignancy is rare; the ratio would otherwise be a ratio of
    negatives). Without the balancing, our ratio of means would equal the official ratio of sums.
  - Encoder = every parameter under the view's prefix (cc.*, mlo.*): Joint: the column and the per-view FC;
    Split: the column, FC and the view's own head (it has no shared head: the whole uni-view model is the
    branch); Shared: only the per-view FC, because the column is shared by both views and its gradient is the
    sum of both views' contributions, which one backward pass cannot separate. The GE noise then goes on the
    shared column's conv weights once (as every encoder's conv weights get it in the official code).
    The official code scales only 4-D tensors (conv weights; its BatchNorm and FC gradients keep k = 1); we
    follow the paper's equation (k on the whole encoder), which its text describes.
  - The GE noise is drawn from a generator seeded by (run seed, epoch, step): identical on every rank under
    torchrun (the gradients are already all-reduced, so the replicas stay equal) and after a resume.
  - k_v is discontinuous at rho_v = 1 (1 just below, 1 - tanh(alpha) just above); kept as published.
  - Optimizer: the official code uses SGD; our loop uses Adam, whose per-parameter normalisation by the running
    second moment undoes a scale that stays constant over many steps (exactly, up to Adam's eps). Only k's
    step-to-step variation (and the GE noise) then changes the update, so expect a weaker effect than with SGD.
Nothing is carried from one step to the next, so a resumed run recomputes exactly what it would have.
Logged per step: ogm_ge_score_{cc,mlo}, ogm_ge_rho_{cc,mlo}, ogm_ge_k_{cc,mlo} (k as applied: 1 outside the
window).
"""
from __future__ import annotations

import math

import torch

from mvmammo.config import Config
from mvmammo.training.methods.base import Method, register_method
from mvmammo.training.methods.view_scores import (VIEWS, balanced_scores, epoch_window_problems, step_generator,
                                                  true_class_probability, two_view_problems, view_of, view_weights)
from mvmammo.training.tasks import targets

GE_EPS = 1e-8  # added to the noise std (official), so a zero gradient still gets a (tiny) draw
NOISE_STREAM = 7  # step_generator stream of the GE noise


def ogm_coefficients(s_cc: torch.Tensor, s_mlo: torch.Tensor, alpha: float) -> dict[str, torch.Tensor]:
    """rho and k of both views from the two scores (tensors or floats)."""
    s_cc, s_mlo = torch.as_tensor(s_cc, dtype=torch.float32), torch.as_tensor(s_mlo, dtype=torch.float32)
    rho = {"cc": s_cc / s_mlo, "mlo": s_mlo / s_cc}
    k = {v: torch.where(rho[v] > 1, 1 - torch.tanh(alpha * rho[v]), torch.ones_like(rho[v])) for v in VIEWS}
    return {"rho_cc": rho["cc"], "rho_mlo": rho["mlo"], "k_cc": k["cc"], "k_mlo": k["mlo"]}


def ogm_scores(out: dict, batch: dict, view_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(s (2,) for (cc, mlo), valid (2,)): the class-balanced true-class probabilities of the per-view logits."""
    y = targets(batch).to(out["logits"].device)
    q = torch.stack([true_class_probability(out[f"logits_{v}"].detach(), y) for v in VIEWS])  # (2, B, 2)
    w = view_weights(out, view_mask, y.shape[0], y.device)
    return balanced_scores(q, y, w)


def modulate(model: torch.nn.Module, k: dict[str, torch.Tensor], ge: bool, generator: torch.Generator | None
             ) -> None:
    """g <- k_v g (+ GE noise on 4-D weights) for each view's parameters; GE noise also on the Shared family's
    column (``shared.column.*``), which k cannot be applied to. In place."""
    for name, p in model.named_parameters():
        g = p.grad
        if g is None:
            continue
        v = view_of(name)
        shared_column = name.startswith("shared.column.")
        if v not in k and not shared_column:
            continue  # the fused head, auxiliary heads: never modulated
        noise = None
        if ge and g.dim() == 4:  # std of the unscaled gradient, as the official code
            std = g.float().std() + GE_EPS
            noise = torch.randn(g.shape, generator=generator, device=g.device, dtype=torch.float32) * std
        if v in k:
            g.mul_(k[v].to(g.dtype))
        if noise is not None:
            g.add_(noise.to(g.dtype))


class OGMGEModulation:
    """Loop hook: the scores, ratios and coefficients of the step, and the modulated gradients."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.p = cfg.methods.ogm_ge

    def active_epoch(self, epoch: int) -> bool:
        return self.p.start_epoch <= epoch < self.p.end_epoch

    def after_backward(self, ctx) -> dict:
        with torch.no_grad():
            s, valid = ogm_scores(ctx.out, ctx.batch, ctx.view_mask)
            c = ogm_coefficients(s[0], s[1], self.p.alpha)
            ok = valid.all()  # a view with no fused sample this step: no ratio, no modulation
            rho = {v: torch.where(ok, c[f"rho_{v}"], torch.ones_like(c[f"rho_{v}"])) for v in VIEWS}
            k = {v: torch.where(ok, c[f"k_{v}"], torch.ones_like(c[f"k_{v}"])) for v in VIEWS}
            if self.active_epoch(ctx.epoch):
                device = next(ctx.model.parameters()).device
                gen = step_generator(self.cfg, ctx.epoch, ctx.step, NOISE_STREAM, device) if self.p.ge else None
                modulate(ctx.model, k, self.p.ge, gen)
            else:
                k = {v: torch.ones_like(k[v]) for v in VIEWS}
        return {"ogm_ge_score_cc": s[0], "ogm_ge_score_mlo": s[1], "ogm_ge_rho_cc": rho["cc"],
                "ogm_ge_rho_mlo": rho["mlo"], "ogm_ge_k_cc": k["cc"], "ogm_ge_k_mlo": k["mlo"]}


@register_method("ogm_ge")
class OGMGE(Method):
    """Gradient modulation of the dominant view's encoder, plus GE noise (module doc)."""

    @classmethod
    def problems(cls, cfg: Config) -> list[str]:
        p = cfg.methods.ogm_ge
        out = two_view_problems(cfg, "ogm_ge")
        if not (math.isfinite(p.alpha) and p.alpha > 0):
            out.append(f"methods.ogm_ge.alpha={p.alpha}: must be > 0 (0.1-0.8 is typical)")
        return out + epoch_window_problems("ogm_ge", p.start_epoch, p.end_epoch)

    def hooks(self) -> list:
        return [OGMGEModulation(self.cfg)]
