"""MMPareto (Wei & Hu, ICML 2024; methods.md section 4.6): the fused and the uni-modal losses pull each view's
encoder in directions that may conflict; where they do, step along their min-norm (MGDA) combination.

Loss: L = L_mm + L_cc + L_mlo, where L_mm is the task loss of the fused ``logits`` (benign + malignant BCE)
and L_v the same loss of view v's uni-modal head. The uni-modal heads are the model's auxiliary heads
(``model.aux_heads=true``: FC+ReLU+linear on the view's pooled column features, ``aux_logits_v``). Why those
and not ``model.view_logits(out)`` (the fused head applied to one view): the paper keeps separate uni-modal
heads, so the uni-modal losses train the encoders but never the multi-modal head; ``view_logits`` would push
the uni-modal losses into the shared head W.

Which tensors are an "encoder": those that BOTH L_mm and a uni-modal loss reach, grouped by the parameter
prefix (name.split(".")[0]). Joint/Split: ``cc.column.*`` and ``mlo.column.*``; Shared: its one column
``shared.column.*``, whose uni-modal loss is L_cc + L_mlo (both views run through it). The per-view FC
``<v>.fc`` sits on the fused path only (the aux heads have their own FC), so like the heads it gets the plain
gradient of L. Per encoder E (all its tensors concatenated), with g_mm = dL_mm/dE and g_u = dL_u/dE:
    cos = g_mm . g_u / (|g_mm| |g_u|)
    cos > 0 (or either gradient zero):  (a_mm, a_u) = (0.5, 0.5)
    otherwise (MGDA, two vectors, closed form):
        a_mm = clip(((g_u - g_mm) . g_u) / |g_mm - g_u|^2, 0, 1),  a_u = 1 - a_mm
Per TENSOR t of E (as the official code): g_t = 2 (a_mm g_mm,t + a_u g_u,t); if |g_mm,t + g_u,t| > |g_t|,
g_t is rescaled to that norm; then g_t *= gamma (methods.mmpareto.gamma, 1.5). When cos > 0 this is exactly
gamma times the plain gradient. Every other trainable tensor gets the plain gradient of L.

Adaptations and notes:
  - Binary labels: each loss is our task's BCE (benign + malignant), nothing class-specific is scored.
  - Two backward passes, not three: g_mm = grad L_mm and g_u = grad (L_cc + L_mlo); on a Joint/Split column
    the other view's uni-modal loss has no gradient, so g_u there is that view's own. Heads get g_mm + g_u.
  - Missing views (data.missing_view=mask): L_v averages only over breasts whose view v is present; modality
    dropout does not touch L_v (the aux heads read the unmasked pooled features, as the loop's forward does).
  - Zero-gradient guard: the official code divides by |g_t| and yields NaN when g_t = 0; here a zero g_t
    stays zero, and a zero g_mm or g_u counts as "no conflict".
  - Under Adam (our default optimiser) a constant gamma is nearly cancelled by the per-parameter scaling;
    it matters with SGD (the paper's setting) and through Adam's epsilon only.
  - torchrun: torch.autograd.grad bypasses DDP's gradient hooks, so both gradients are averaged over ranks
    here (one all-reduce per step) before the weights are computed.
Logged per step (after_backward): mmpareto_cos_<enc> and mmpareto_a_mm_<enc> (the weight of g_mm) for each
encoder (cc, mlo; shared for the Shared family). No state across steps: nothing to restore on resume.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist

from mvmammo.config import Config
from mvmammo.training.methods.base import Method, register_method
from mvmammo.training.methods.view_scores import two_view_problems
from mvmammo.training.tasks import bce_pair, targets

VIEWS = ("cc", "mlo")


def min_norm_weight(g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """a in [0, 1] minimising |a g1 + (1 - a) g2|^2 (flat vectors): the weight of g1. 0-dim tensor.

    d/da |g2 + a (g1 - g2)|^2 = 0  ->  a = (g2 - g1) . g2 / |g1 - g2|^2, clipped to [0, 1].
    """
    diff = g1 - g2
    denom = diff.dot(diff)
    a = (-diff).dot(g2) / denom.clamp_min(torch.finfo(denom.dtype).tiny)
    return torch.where(denom > 0, a.clamp(0.0, 1.0), torch.full_like(a, 0.5))  # g1 == g2: any a; take 0.5


def pareto_weights(g_mm: torch.Tensor, g_u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, a_mm) for one encoder's flat gradients: 0.5 without conflict, else the min-norm weight.
    Tensor arithmetic only (no host synchronisation)."""
    n_mm, n_u = g_mm.norm(), g_u.norm()
    nonzero = (n_mm > 0) & (n_u > 0)
    cos = torch.where(nonzero, g_mm.dot(g_u) / (n_mm * n_u).clamp_min(1e-30), torch.zeros_like(n_mm))
    agree = (cos > 0) | ~nonzero
    a_mm = torch.where(agree, torch.full_like(cos, 0.5), min_norm_weight(g_mm, g_u))
    return cos, a_mm


def combine(g_mm: torch.Tensor, g_u: torch.Tensor, a_mm: torch.Tensor, gamma: float) -> torch.Tensor:
    """One tensor's new gradient: gamma * 2 (a_mm g_mm + (1 - a_mm) g_u), scaled up to |g_mm + g_u| if shorter."""
    g = 2 * (a_mm * g_mm + (1 - a_mm) * g_u)
    n_new, n_sum = g.norm(), (g_mm + g_u).norm()
    scale = torch.where((n_new > 0) & (n_sum > n_new), n_sum / n_new.clamp_min(1e-30), torch.ones_like(n_new))
    return g * scale * gamma


def _mean_over_ranks(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """DDP's averaging, done by hand (autograd.grad does not trigger its hooks); a no-op in one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1 or not grads:
        return grads
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    out, i = [], 0
    for g in grads:
        out.append(flat[i:i + g.numel()].view_as(g))
        i += g.numel()
    return out


def pareto_backward(model: torch.nn.Module, loss_mm: torch.Tensor, loss_u: torch.Tensor, gamma: float
                    ) -> dict[str, torch.Tensor]:
    """Fill .grad of ``model``'s trainable parameters (see the module doc); returns the logged quantities."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    g_mm = torch.autograd.grad(loss_mm, params, retain_graph=True, allow_unused=True)
    g_u = torch.autograd.grad(loss_u, params, allow_unused=True)
    reach = [(a is not None, b is not None) for a, b in zip(g_mm, g_u)]
    zeros = [torch.zeros_like(p) for p in params]
    g_mm = _mean_over_ranks([a if a is not None else z for a, z in zip(g_mm, zeros)])
    g_u = _mean_over_ranks([b if b is not None else z for b, z in zip(g_u, zeros)])
    encoders: dict[str, list[int]] = {}
    for i, (name, _) in enumerate(named):
        if all(reach[i]):
            encoders.setdefault(name.split(".")[0], []).append(i)
    for i, p in enumerate(params):  # heads, fused-path FCs: the plain gradient of L = L_mm + L_u
        if any(reach[i]):
            p.grad = g_mm[i] + g_u[i]
    logged = {}
    for enc, idx in encoders.items():
        cos, a_mm = pareto_weights(torch.cat([g_mm[i].reshape(-1) for i in idx]),
                                   torch.cat([g_u[i].reshape(-1) for i in idx]))
        for i in idx:
            params[i].grad = combine(g_mm[i], g_u[i], a_mm, gamma)
        logged[f"mmpareto_cos_{enc}"] = cos.detach()
        logged[f"mmpareto_a_mm_{enc}"] = a_mm.detach()
    return logged


def _present(batch: dict, i: int, weight: torch.Tensor | None) -> torch.Tensor | None:
    """(B,) sample weight of view i's uni-modal loss: the loss's own weight times "view i present"."""
    present = batch.get("present")
    if present is None:
        return weight
    w = (present[:, i] != 0).float()
    return w if weight is None else w * weight


class _Log:
    def __init__(self, method: "MMPareto"):
        self.method = method

    def after_backward(self, ctx) -> dict:
        out, self.method.logged = self.method.logged, {}
        return out


@register_method("mmpareto")
class MMPareto(Method):
    """L_mm + L_cc + L_mlo with the encoders' gradients combined as MMPareto does."""

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.logged: dict = {}

    @classmethod
    def problems(cls, cfg: Config) -> list[str]:
        out = two_view_problems(cfg, "mmpareto")
        if not cfg.model.aux_heads:
            out.append("model.aux_heads=false: reg.method=mmpareto needs separate uni-modal heads; set "
                       "model.aux_heads=true")
        g = cfg.methods.mmpareto.gamma
        if not (math.isfinite(g) and g > 0):
            out.append(f"methods.mmpareto.gamma={g}: must be a finite number > 0 (the paper's 1.5)")
        return out

    def hooks(self) -> list:
        return [_Log(self)]

    def loss(self, out: dict, batch: dict, ctx) -> dict:
        y, weight = targets(batch), out.get("sample_weight")
        fused = bce_pair(out["logits"], y, weight)
        uni = {v: bce_pair(out[f"aux_logits_{v}"], y, _present(batch, i, weight))["loss"]
               for i, v in enumerate(VIEWS)}
        return {"loss": fused["loss"] + uni["cc"] + uni["mlo"], "loss_benign": fused["loss_benign"],
                "loss_malignant": fused["loss_malignant"], "loss_fused": fused["loss"],
                "loss_cc": uni["cc"], "loss_mlo": uni["mlo"]}

    def backward(self, losses: dict, ctx) -> None:
        self.logged = pareto_backward(ctx.model, losses["loss_fused"], losses["loss_cc"] + losses["loss_mlo"],
                                      self.cfg.methods.mmpareto.gamma)
