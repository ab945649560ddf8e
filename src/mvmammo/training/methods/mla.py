"""MLA, Multimodal Learning by Alternating unimodal adaptation (Zhang, Yoon, Bansal, Yao, CVPR 2024),
on the sum-fusion families (Joint, Shared): reg.method=mla, methods.mla.project.

What it does here:
  - Alternation, one view per optimizer step: even steps train CC alone, odd steps MLO alone (global step
    counter, so a resumed run keeps the parity). "Alone through the shared head" is the loop's forward with
    view_mask (1, 0) or (0, 1): the fused logit is then W h_v + b, the view's stand-alone logit. The loss is
    the plain two-label BCE on it; breasts whose trained view is absent (data.missing_view=mask, or dropped
    by modality dropout) are weighted out of it, since their logit is the bias alone.
    ADAPTATION: the paper (and its code) runs both views on every minibatch with two optimizer steps; our one
    loop makes one step per batch, so the views alternate between consecutive batches instead. Over an
    epoch each view sees half of the batches.
  - The other view's parameters (prefix ``cc.``/``mlo.``) get ``grad = None`` after the backward pass: their
    gradient is exactly zero (their features were multiplied by 0), but Adam would still move them with its
    momentum; with None Adam skips them, so a step trains only its view's encoder and the head. (The other
    column's BatchNorm running statistics still follow its forward pass; the Shared family's one column is
    trained by both views, each on its own steps.)
  - Head-gradient projection (methods.mla.project, on by default), the OWM-style rule the paper describes
    (the official code never runs it: its GSPlugin tests the parameter name "module.weight", which the head
    passed to it does not have; BalanceBenchmark adds grad P^T to the gradient instead of replacing it):
        r     = mean over the batch of h_v of the view that was just trained,        (fc_dim,)
        alpha = 0.1 ** (1 + step_in_epoch / steps_per_epoch),
        P    <- P - (P r)(P r)^T / (alpha + r^T P r),   P <- P / ||P||_F,             (fc_dim, fc_dim), P_0 = I
        grad_W <- grad_W P^T    for the shared head's weight W (2, fc_dim); the bias is left alone.
    ORDER: each step's gradient is projected with the P that exists BEFORE this step's features enter it;
    right after the projection, P absorbs this step's r (with this step's alpha), ready for the next step,
    which trains the OTHER view. So the MLO step's head update is (nearly) orthogonal to the CC features
    just learned, and vice versa: W_new r_cc ~= W_old r_cc, which is the point of the method (do not forget
    the previously trained modality). The official GSPlugin (dead code) absorbs the CURRENT batch's r before
    projecting that same batch's gradient; that recursive-least-squares ordering also shrinks the current
    view's update along its own mean feature direction by alpha / (alpha + r^T P r) (at alpha ~ 0.01-0.1
    that removes most of the step), which protects nothing extra: the other view's features are already
    in P from its own step. Both orders keep the whole history in P; ours lags it by one step.
    The Frobenius normalisation makes ||P||_F = 1, so from the second step on the head's gradient is
    ~1/sqrt(fc_dim) times smaller; Adam is invariant to such a scale (up to its eps), so it only matters
    for the first steps' second-moment estimate.
  - steps_per_epoch is recomputed from (seed, epoch) with the loop's own sampling (data/sampler.py), so the
    alpha schedule is known at every step; r is averaged over all processes under torchrun (same P everywhere).
  - Inference: entropy gates (models/gates.py), set by reg.method=mla through model.fusion_gate=auto.
  - No per-view score is computed during training, so no class-balanced adaptation is needed; the entropy
    gate works per sample and label.
  - Logged per step: mla_view (0 cc, 1 mlo), mla_alpha, mla_grad_scale (||grad_W P^T|| / ||grad_W||).

Families: uni-view refused (nothing to balance), Split refused (no shared head to alternate through).
Resume: P is stored in last.pt at every epoch end (state_dict) and restored, so a resumed run continues with the
projector of the uninterrupted one; the alternation parity and the alpha schedule (from the loop's
ctx.steps_per_epoch and ctx.epoch_start_step) follow from the step count.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist

from mvmammo.config import Config
from mvmammo.data.sampler import epoch_rows
from mvmammo.training.methods.base import Method, register_method
from mvmammo.training.tasks import bce_pair, targets

VIEWS = ("cc", "mlo")  # column order of view_mask
ALPHA_BASE = 0.1  # alpha = 0.1 ** (1 + batch_index / batches_per_epoch), the paper's schedule


def view_of_step(step: int) -> int:
    """Index of the view trained at global optimizer step ``step``: 0 (cc) on even steps, 1 (mlo) on odd."""
    return step % 2


def alpha_at(step_in_epoch: int, steps_per_epoch: int) -> float:
    """The projection's regulariser alpha = 0.1 ** (1 + step_in_epoch / steps_per_epoch): 0.1 at an epoch's
    first step, falling towards 0.01 at its end (a stronger projection as the epoch goes on)."""
    return ALPHA_BASE ** (1.0 + step_in_epoch / max(steps_per_epoch, 1))


@torch.no_grad()
def owm_update(P: torch.Tensor, r: torch.Tensor, alpha: float) -> torch.Tensor:
    """P (d, d), r (d,) -> the new P: P - (P r)(P r)^T / (alpha + r^T P r), then divided by its Frobenius norm."""
    k = P @ r  # (d,)
    P = P - torch.outer(k, k) / (alpha + r @ k)
    return P / torch.linalg.norm(P)  # Frobenius norm of a matrix


@torch.no_grad()
def project(grad: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """grad (out, d) of a linear layer's weight -> grad P^T."""
    return grad @ P.T


def global_mean(h: torch.Tensor, keep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (d,), count ()) over the rows of h (B, d) where keep (B,) > 0 (all rows if None), over every
    process under torchrun; the mean is 0 where no row counts."""
    h = h.detach().float()
    w = torch.ones(h.shape[0], device=h.device) if keep is None else (keep > 0).float()
    acc = torch.cat([(h * w[:, None]).sum(0), w.sum().reshape(1)])  # (d + 1,): sum of rows, count
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(acc)
    return acc[:-1] / acc[-1].clamp(min=1.0), acc[-1]


def steps_in_epoch(ctx) -> int:
    """Optimizer steps of ctx.epoch, from the loop's own per-epoch sampling (deterministic in seed, epoch)."""
    cfg, cache = ctx.cfg, ctx.maker.cache
    order = epoch_rows(ctx.train_rows, cache.labels(ctx.train_rows), cfg.run.seed, ctx.epoch, cfg.data.neg_ratio,
                       cfg.data.sampling, cache.index)
    return max(1, math.ceil(len(order) / cfg.optim.batch_size))


def drop_grads(model: torch.nn.Module, prefix: str) -> None:
    """grad = None for every parameter whose top-level name is ``prefix`` (Adam then leaves it unchanged)."""
    for name, p in model.named_parameters():
        if name.split(".")[0] == prefix:
            p.grad = None


@register_method("mla")
class MLA(Method):
    """Alternating uni-view steps through the shared head, with the head-gradient projection."""

    @classmethod
    def problems(cls, cfg: Config) -> list[str]:
        fam = cfg.model.family
        if fam.startswith("uni_"):
            return [f"reg.method=mla with model.family={fam}: MLA balances two views; use joint or shared"]
        if fam == "split":
            return ["reg.method=mla with model.family=split: MLA trains each view through one shared head, which "
                    "Split does not have; use joint or shared"]
        return []

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.project = cfg.methods.mla.project
        self.P: torch.Tensor | None = None
        self._resumed_P: torch.Tensor | None = None
        self._epoch, self._epoch_start, self._steps = -1, 0, 1

    def hooks(self) -> list:
        return [self]

    # --- the loop's steps ---
    def view_mask(self, ctx, n: int, generator: torch.Generator, device: torch.device):
        mask = torch.zeros(n, 2, device=device)
        mask[:, view_of_step(ctx.step)] = 1.0  # (B, 2): the trained view kept, the other zeroed
        return mask, None

    def loss(self, out: dict, batch: dict, ctx) -> dict:
        v = view_of_step(ctx.step)
        weight = out.get("sample_weight")
        if ctx.view_mask is not None:  # breasts without the trained view (absent or dropped) carry no signal
            keep = (ctx.view_mask[:, v] > 0).float()
            weight = keep if weight is None else weight * keep
        losses = bce_pair(out["logits"], targets(batch), weight)  # logits = W h_v + b (the other view masked)
        losses[f"mla_loss_{VIEWS[v]}"] = losses["loss"].detach()
        return losses

    # --- hooks ---
    def on_train_start(self, ctx) -> dict:
        W = ctx.model.shared["head"].weight  # (2, fc_dim)
        self.P = torch.eye(W.shape[1], device=W.device, dtype=torch.float32)
        if self._resumed_P is not None:  # the projector after the last finished epoch (last.pt)
            self.P = self._resumed_P.to(W.device, torch.float32)
        self._epoch = -1
        return {}

    def state_dict(self) -> dict:
        return {} if self.P is None else {"P": self.P.detach().cpu()}

    def load_state_dict(self, state: dict) -> None:
        self._resumed_P = state.get("P")

    def after_backward(self, ctx) -> dict:
        if ctx.epoch != self._epoch:  # first step of an epoch (also after a resume)
            self._epoch, self._epoch_start = ctx.epoch, ctx.epoch_start_step
            self._steps = max(1, ctx.steps_per_epoch or steps_in_epoch(ctx))
        v = view_of_step(ctx.step)
        drop_grads(ctx.model, VIEWS[1 - v])  # only the trained view's encoder (and the head) may move
        alpha = alpha_at(ctx.step - self._epoch_start, self._steps)
        logged = {"mla_view": v, "mla_alpha": alpha}
        W = ctx.model.shared["head"].weight
        if self.project and W.grad is not None:
            g = W.grad
            new = project(g.float(), self.P)
            logged["mla_grad_scale"] = torch.linalg.norm(new) / torch.linalg.norm(g.float()).clamp(min=1e-30)
            W.grad = new.to(g.dtype)
            # This step's features enter P only now, so the NEXT step (the other view) is projected away from them.
            keep = None if ctx.view_mask is None else ctx.view_mask[:, v]
            r, _ = global_mean(ctx.out[f"h_{VIEWS[v]}"], keep)  # (fc_dim,); 0 if no row: P unchanged
            self.P = owm_update(self.P, r, alpha)
        return logged
