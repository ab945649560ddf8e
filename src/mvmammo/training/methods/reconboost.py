"""ReconBoost (Hua et al., ICML 2024): alternating boosting of the two view learners with a reconcilement
term, then global rectification: reg.method=reconboost, methods.reconboost.{w1, w2, stage_epochs,
correct_epochs, boost_rate}.

Schedule (epochs of our loop, a pure function of the epoch, :func:`phase`): a round is
    stage_epochs of the CC learner, correct_epochs of rectification, stage_epochs of the MLO learner,
    correct_epochs of rectification,
repeated. This is the official code's order (huacong/ReconBoost train.py: every modality stage is followed by
its own rectification phase, stages alternating audio, visual, ...). NOTE for the config comment: "after each
round of stages" in method_config.py reads as if rectification came once per (CC, MLO) pair; the code does it
after every stage, and so do we.

Stage of view m (the learner m = its column and FC, plus the shared head, which the official code also trains
in a stage): the forward runs both views (no view mask, so the other view's prediction is available), and the
loss per breast and label is
    L = -w1 log p_m(y) + w2 p_o(y) log p_m(y) = (w1 - w2 p_o(y)) * BCE(u_m, y),
u_m = the stand-alone logit of view m (model.view_logits: W h_m + b for sum fusion, the view's own head for
Split), p_m(y) = sigmoid(u_m) if y = 1 else 1 - sigmoid(u_m), and p_o(y) the same for the OTHER view's
stand-alone logit, DETACHED (the "ensemble of the other learners" of the paper, here the one other view).
A breast the other view already gets right weighs less (w1 - w2 at worst, w1 when the other view is sure and
wrong): boosting towards what the other view misses. Mean over breasts, summed over the two labels.
ADAPTATION (binary labels): p(y) per label from the sigmoid instead of a softmax over classes; the official
loss also divides by the number of classes (mean over the one-hot), a constant we leave out. There is no
per-view batch score, so no class-balanced adaptation is needed. p_o uses the stand-alone logit u_o, not
boost_rate * u_o (identical at the default boost_rate 1).
The other view's parameters (prefix cc./mlo.) get grad None after the backward (the official code steps an
optimizer over learner m only); the loss carries 0 * u_o so that DDP sees a (zero) gradient for every
parameter it ran. The Shared family's one column belongs to both learners and trains in every stage.

The "GA" loss of the official code (and BalanceBenchmark), alpha * MSE(softmax(out_m).detach(),
softmax(out_o).detach()), has NO gradient: both of its inputs are detached, so it changes nothing but the
logged loss value. It is therefore left out.

Rectification: BCE on boost_rate * (logits_cc + logits_mlo), the per-view logits of the family (sum fusion:
z_v = W h_v + b/2, so the sum is the fused logit; Split: the sum of the two heads' logits), all parameters.
Inference is the family's own fusion (for Split the averaged probability, not the sum of logits).
One Adam optimizer serves all phases (the official code makes a new SGD optimizer per phase); parameters
that sit out a stage keep their Adam state untouched (grad None).

Logged per step: reconboost_phase (0 CC stage, 1 MLO stage, 2 rectification), reconboost_weight (the mean
per-breast weight w1 - w2 p_o(y) in stages). Resume: the phase is a function of the epoch; nothing to restore.
Families: uni-view refused; Joint, Shared and Split supported.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mvmammo.config import Config
from mvmammo.training.methods.base import Method, register_method
from mvmammo.training.methods.mla import drop_grads
from mvmammo.training.tasks import bce_pair, targets

VIEWS = ("cc", "mlo")
PHASES = ("cc", "mlo", "rectify")  # logged as their index


def phase(epoch: int, stage_epochs: int, correct_epochs: int) -> str:
    """"cc" / "mlo" (that learner's stage) or "rectify" for 0-based ``epoch``."""
    half = stage_epochs + correct_epochs  # one view's stage plus its rectification
    pos = epoch % (2 * half)
    view = "cc" if pos < half else "mlo"
    return view if pos % half < stage_epochs else "rectify"


def true_class_prob(u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """p(y) per element: sigmoid(u) where y = 1, 1 - sigmoid(u) where y = 0 (= sigmoid((2y - 1) u))."""
    return torch.sigmoid((2 * y - 1) * u)


def boost_weight(u_other: torch.Tensor, y: torch.Tensor, w1: float, w2: float) -> torch.Tensor:
    """(B, 2) per breast and label: w1 - w2 p_o(y), with the other view's logit u_other detached."""
    return w1 - w2 * true_class_prob(u_other.detach().float(), y)


def stage_loss(u_m: torch.Tensor, u_other: torch.Tensor, y: torch.Tensor, w1: float, w2: float,
               sample_weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The stage loss (module doc) as a loss dict; sample_weight (B,) masks breasts out as bce_pair does."""
    w = boost_weight(u_other, y, w1, w2)  # (B, 2)
    per = w * F.binary_cross_entropy_with_logits(u_m.float(), y, reduction="none")  # (B, 2)
    if sample_weight is not None:
        means = (per * sample_weight[:, None]).sum(0) / sample_weight.sum().clamp(min=1.0)
    else:
        means = per.mean(0)
    # 0 * u_other: every parameter DDP ran gets a (zero) gradient; the other view's are set to None afterwards.
    loss = means.sum() + 0.0 * u_other.float().sum()
    return {"loss_benign": means[0], "loss_malignant": means[1], "loss": loss,
            "reconboost_weight": w.mean().detach()}


@register_method("reconboost")
class ReconBoost(Method):
    """Per-epoch phases: one view's boosting stage, or global rectification (module doc)."""

    @classmethod
    def problems(cls, cfg: Config) -> list[str]:
        c, out = cfg.methods.reconboost, []
        if cfg.model.family.startswith("uni_"):
            out.append(f"reg.method=reconboost with model.family={cfg.model.family}: ReconBoost alternates two "
                       "views; use joint, shared or split")
        if c.stage_epochs < 1:
            out.append(f"methods.reconboost.stage_epochs={c.stage_epochs}: must be >= 1")
        if c.correct_epochs < 0:
            out.append(f"methods.reconboost.correct_epochs={c.correct_epochs}: must be >= 0")
        if not c.w1 > c.w2 >= 0:
            out.append(f"methods.reconboost.w1={c.w1}, w2={c.w2}: need w1 > w2 >= 0, else a breast's weight "
                       "w1 - w2 p(y) can reach 0 or below and the stage rewards errors")
        if not c.boost_rate > 0:
            out.append(f"methods.reconboost.boost_rate={c.boost_rate}: must be > 0")
        return out

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.c = cfg.methods.reconboost

    def phase(self, epoch: int) -> str:
        return phase(epoch, self.c.stage_epochs, self.c.correct_epochs)

    def hooks(self) -> list:
        return [self]

    def loss(self, out: dict, batch: dict, ctx) -> dict:
        y = targets(batch)
        ph = self.phase(ctx.epoch)
        if ph == "rectify":
            z = self.c.boost_rate * (out["logits_cc"] + out["logits_mlo"])  # (B, 2)
            return bce_pair(z, y, out.get("sample_weight"))
        m = VIEWS.index(ph)
        u = ctx.model.view_logits(out)  # (u_cc, u_mlo), each (B, 2)
        weight = out.get("sample_weight")
        if ctx.view_mask is not None:  # a breast without view m (absent or dropped) cannot train learner m
            keep = (ctx.view_mask[:, m] > 0).float()
            weight = keep if weight is None else weight * keep
        return stage_loss(u[m], u[1 - m], y, self.c.w1, self.c.w2, weight)

    # --- hooks ---
    def after_backward(self, ctx) -> dict:
        ph = self.phase(ctx.epoch)
        if ph != "rectify":
            drop_grads(ctx.model, VIEWS[1 - VIEWS.index(ph)])  # only learner m (and the head) moves
        return {"reconboost_phase": PHASES.index(ph)}

    def on_epoch_end(self, ctx) -> dict:
        return {"reconboost_phase": PHASES.index(self.phase(ctx.epoch))}
