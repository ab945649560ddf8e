"""Class-balanced per-view scores for binary, imbalanced labels (used by PMR and OPM; docs/balance.md).

The balancing methods score a view by "the softmax probability of the true class, summed over the batch"
(OGM-GE, PMR, OPM). Our labels are two independent binary ones (benign, malignant), malignant rare, so per
label the true-class probability is p(y) = sigmoid(u) if y = 1 else 1 - sigmoid(u) = sigmoid((2y - 1) u), and
the batch score is CLASS-BALANCED: the mean over the positives and the mean over the negatives, averaged (a class
absent from the batch is skipped, so a batch without a malignant breast scores that label by its negatives
alone). The view's score is the mean of its labels' scores over the labels that have any sample.

Why both labels and not malignant alone: a batch of 8-32 breasts rarely holds a malignant one (a few % of
breasts), so the malignant label alone would mostly measure the negatives; the columns' features serve both
labels, and averaging uses every class a batch has. A ratio of two such scores is what the methods compare.

Everything stays on the device (no host synchronisation): validity is returned as a tensor.
"""
from __future__ import annotations

import torch


def true_class_probability(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, L) probability each sample's own class gets: sigmoid(u) for y = 1, 1 - sigmoid(u) for y = 0."""
    return torch.sigmoid((2 * y.float() - 1) * logits.float())


def balanced_score(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None,
                   labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(score, valid): the class-balanced mean true-class probability, averaged over labels.

    logits, y: (B, L); weight: (B,) in {0, 1} (0 = leave the sample out), None = all; labels: (L,) bool, the
    labels to use (None = all). score is a 0-d float tensor in (0, 1) where valid (a 0-d bool: some label had a
    sample), 0 otherwise.
    """
    p = true_class_probability(logits, y)  # (B, L)
    w = torch.ones(p.shape[0], device=p.device) if weight is None else weight.float().to(p.device)
    yf = y.float()
    means, present = [], []
    for cls_mask in (yf, 1 - yf):  # positives, then negatives; each (B, L)
        m = cls_mask * w[:, None]
        n = m.sum(0)  # (L,) samples of this class per label
        means.append((p * m).sum(0) / n.clamp(min=1e-12))
        present.append(n > 0)
    has = torch.stack(present).float()  # (2, L)
    per_label = (torch.stack(means) * has).sum(0) / has.sum(0).clamp(min=1)  # (L,)
    ok = has.sum(0) > 0  # (L,) the label had a sample of some class
    if labels is not None:
        ok = ok & labels.to(ok.device)
    okf = ok.float()
    score = (per_label * okf).sum() / okf.sum().clamp(min=1)
    return score, ok.any()


def score_ratio(s_cc: torch.Tensor, s_mlo: torch.Tensor, valid: torch.Tensor,
                fallback: torch.Tensor | float = 1.0) -> torch.Tensor:
    """rho_cc = s_cc / s_mlo where valid, else ``fallback`` (0-d tensor; rho_mlo = 1 / rho_cc)."""
    fb = torch.as_tensor(fallback, dtype=torch.float32, device=s_cc.device)
    return torch.where(valid, s_cc / s_mlo.clamp(min=1e-12), fb)
