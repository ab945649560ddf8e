"""Shared arithmetic of the view-balancing methods (OGM-GE, AGM, PMR, OPM): THE class-balanced per-view score of
a batch (the one score function of all four), each view's parameters by name prefix, per-step random draws that
resume exactly, and the collective helpers that keep a method's state identical on every rank.

"The softmax probability of the true class" (OGM-GE, PMR, OPM) becomes, per binary label,
p_v(y) = sigmoid(u) if y = 1 else 1 - sigmoid(u) = sigmoid((2y - 1) u) (true_class_probability); AGM scores a
BCE instead. Either quantity q goes through balanced_scores.

Class-balanced score. Each breast has two binary labels (benign, malignant) and malignancy is rare, so a plain
batch mean of a per-sample quantity q (a probability of the true class, a BCE) is almost the mean over negatives.
Per label l we take the mean of q over the positives and the mean over the negatives and average the two (a class
absent from the batch is skipped), then average over the two labels:

    score_v = mean_l [ (mean_{i: y_il = 1} q_vil + mean_{i: y_il = 0} q_vil) / #classes present ]

Both labels, because the gradient these methods modulate is that of the summed loss of both labels; the malignant
label alone would leave most batches with one class. Samples whose view v was not fused (modality dropout, a
missing view: the view mask is 0) or whose loss weight is 0 are left out of view v's score: their per-view
output is the head's bias alone and says nothing about the view. ``labels`` restricts the mean over labels to
some labels (PMR: those whose both class prototypes exist). Under torchrun the sums and counts are
all-reduced, so every rank gets the same score and the same coefficient (otherwise the replicas would drift apart).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from mvmammo.config import Config

VIEWS = ("cc", "mlo")  # the order of every (2, ...) tensor here, as in the model's view mask
TWO_VIEW_FAMILIES = ("joint", "shared", "split")


def two_view_problems(cfg: Config, method: str) -> list[str]:
    """The family check every view-balancing method shares: it needs a model that reads both views."""
    if cfg.model.family not in TWO_VIEW_FAMILIES:
        return [f"model.family={cfg.model.family}: reg.method={method} balances two views; use "
                f"{', '.join(TWO_VIEW_FAMILIES)}"]
    return []


def epoch_window_problems(section: str, start: int, end: int) -> list[str]:
    if start < 0 or end < start:
        return [f"methods.{section}.start_epoch={start}, end_epoch={end}: need 0 <= start_epoch <= end_epoch "
                "(0-based epochs, end exclusive)"]
    return []


def view_weights(out: dict, view_mask: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
    """(2, B) weight of each sample in each view's score: its loss weight times 1[view fused]."""
    w = torch.ones(2, n, device=device)
    sample_weight = out.get("sample_weight")
    if sample_weight is not None:
        w = w * sample_weight.detach().float().to(device)[None, :]
    if view_mask is not None:
        w = w * (view_mask.detach().to(device).T > 0).float()  # (2, B); inverted scaling is > 1, still "fused"
    return w


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks in place under torchrun; the tensor itself otherwise."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s values in place on every rank under torchrun (state that must be identical everywhere)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast(t, src=src)
    return t


def true_class_probability(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(..., L) probability each sample's own class gets: sigmoid(u) for y = 1, 1 - sigmoid(u) for y = 0."""
    return torch.sigmoid((2 * y.float() - 1) * logits.float())


def balanced_scores(q: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None,
                    labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-balanced score per view (module doc).

    q (V, B, L): per-view, per-sample, per-label quantity; y (B, L) 0/1 targets; weight (V, B) or (B,) >= 0
    (None = all 1); labels (L,) bool: the labels that enter the mean (None = all).
    Returns (scores (V,), valid (V,) bool); a view without any weighted sample of a used label is not valid
    (score 0). Stays on the device: no host synchronisation (one all-reduce under torchrun: every rank must call).
    """
    if weight is None:
        weight = torch.ones(q.shape[:2], device=q.device)
    elif weight.dim() == 1:
        weight = weight[None].expand(q.shape[0], -1)
    q = q.float()
    pos = y.float()[None]                      # (1, B, L)
    w = weight.float()[:, :, None]             # (V, B, 1)
    stats = torch.stack([(w * pos * q).sum(1), (w * pos).sum(1),
                         (w * (1 - pos) * q).sum(1), (w * (1 - pos)).sum(1)])  # (4, V, L)
    stats = all_reduce_sum(stats)
    has_pos, has_neg = stats[1] > 0, stats[3] > 0              # (V, L)
    mean_pos = stats[0] / stats[1].clamp(min=1e-12)
    mean_neg = stats[2] / stats[3].clamp(min=1e-12)
    n_cls = has_pos.float() + has_neg.float()
    per_label = (mean_pos * has_pos + mean_neg * has_neg) / n_cls.clamp(min=1)  # (V, L)
    label_ok = n_cls > 0
    if labels is not None:
        label_ok = label_ok & labels.to(label_ok.device)[None]
    scores = (per_label * label_ok).sum(-1) / label_ok.sum(-1).clamp(min=1)   # (V,)
    return scores, label_ok.any(-1)


def score_ratio(s_cc: torch.Tensor, s_mlo: torch.Tensor, valid: torch.Tensor,
                fallback: torch.Tensor | float = 1.0) -> torch.Tensor:
    """rho_cc = s_cc / s_mlo where valid, else ``fallback`` (0-d tensor; rho_mlo = 1 / rho_cc)."""
    fb = torch.as_tensor(fallback, dtype=torch.float32, device=s_cc.device)
    return torch.where(valid, s_cc / s_mlo.clamp(min=1e-12), fb)


def view_of(name: str) -> str:
    """The parameter group of a parameter name: cc, mlo, shared or aux_* (the prefix rule)."""
    return name.split(".")[0]


def scale_view_grads(model: torch.nn.Module, scale: dict[str, torch.Tensor | float]) -> None:
    """grad <- scale[v] * grad for every parameter of view v (prefix ``v.``), in place."""
    for name, p in model.named_parameters():
        v = view_of(name)
        if p.grad is not None and v in scale:
            p.grad.mul_(scale[v])


def step_seed(cfg: Config, epoch: int, step: int, stream: int) -> int:
    """A seed from (run seed, epoch, step, stream): the same draw after a resume and on every rank."""
    return int(np.random.SeedSequence([cfg.run.seed, epoch, step, stream]).generate_state(1)[0])


def step_generator(cfg: Config, epoch: int, step: int, stream: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(step_seed(cfg, epoch, step, stream))
