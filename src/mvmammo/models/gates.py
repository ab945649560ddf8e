"""Inference-time rules that weight the two per-view logits by a per-sample confidence (model.fusion_gate).

Inputs are each view's stand-alone logits u_v (B, 2) for (benign, malignant): for sum-fusion families the
shared head applied to that view alone, W h_v + b; for Split each view's own head. Every label is a binary
sigmoid output, so each view's "class distribution" per label is (sigmoid(u), 1 - sigmoid(u)).

- entropy (MLA, Zhang et al. CVPR 2024): e_v = binary entropy of sigmoid(u_v) per label (nats); gates
  lambda_v = exp(max_k e_k - e_v) / sum_j exp(max_k e_k - e_j), i.e. a softmax of -e over the views, computed
  per sample and label (the official code's softmax across the batch is a known bug, methods.md 4.5); output
  sum_v lambda_v u_v.
- energy (QMF, Zhang et al. ICML 2023): conf_v = 0.1 * logsumexp over the label's two classes. A single
  sigmoid logit u is the 2-class softmax with logits (u/2, -u/2), so conf_v = 0.1 * logsumexp(u/2, -u/2),
  symmetric in the class (logsumexp(0, u) = softplus(u) would favour positive logits; methods.md 4.8);
  output sum_v conf_v u_v.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

QMF_SCALE = 0.1  # the QMF code's constant in conf = 0.1 * logsumexp(logits)
GATES = ("none", "entropy", "energy")


def binary_entropy(u: torch.Tensor) -> torch.Tensor:
    """H(sigmoid(u)) in nats, elementwise, stable for large |u|."""
    p = torch.sigmoid(u)
    return -(p * F.logsigmoid(u) + (1 - p) * F.logsigmoid(-u))


def entropy_weights(u_cc: torch.Tensor, u_mlo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    e = torch.stack([binary_entropy(u_cc), binary_entropy(u_mlo)])  # (2, B, 2)
    lam = torch.softmax(e.max(0, keepdim=True).values - e, dim=0)  # shift-invariant: same as softmax(-e)
    return lam[0], lam[1]


def energy_confidence(u: torch.Tensor) -> torch.Tensor:
    """QMF's confidence of one view, (B, 2): 0.1 * logsumexp(u/2, -u/2) = 0.1 * (|u|/2 + log(1 + e^-|u|))."""
    return QMF_SCALE * torch.logaddexp(u / 2, -u / 2)


def gated_logits(gate: str, u_cc: torch.Tensor, u_mlo: torch.Tensor) -> torch.Tensor:
    """The fused logit (B, 2) under ``gate`` (entropy or energy)."""
    if gate == "entropy":
        w_cc, w_mlo = entropy_weights(u_cc, u_mlo)
    elif gate == "energy":
        w_cc, w_mlo = energy_confidence(u_cc), energy_confidence(u_mlo)
    else:
        raise ValueError(f"model.fusion_gate={gate!r}; one of {', '.join(GATES)}")
    return w_cc * u_cc + w_mlo * u_mlo


