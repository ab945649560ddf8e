"""Small layers shared by the model families: input noise, pooling, per-view FC, fusion arithmetic.

Two outputs everywhere: two independent binary classifiers (benign, malignant), so logits are (B, 2) and
each column goes through a sigmoid, never a softmax across the two.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

N_OUTPUTS = 2  # (benign, malignant)


class GaussianNoise(nn.Module):
    """Adds N(0, std^2) to the input in training mode only (the reference code's input noise)."""

    def __init__(self, std: float):
        super().__init__()
        if std < 0:
            raise ValueError(f"input noise std must be >= 0, got {std}")
        self.std = float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.std == 0.0:
            return x
        return x + torch.randn_like(x) * self.std

    def extra_repr(self) -> str:
        return f"std={self.std}"


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, C): the mean over all positions (the column's whole field of view)."""
    return x.mean(dim=(2, 3))


class ViewFC(nn.Linear):
    """The per-view FC layer 256 -> 512 followed by ReLU: pooled column features -> h_view."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(x))


class AuxHead(nn.Module):
    """Gradient blending's extra per-view head: its own FC+ReLU and output layer on the pooled features."""

    def __init__(self, in_features: int, fc_dim: int):
        super().__init__()
        self.fc = ViewFC(in_features, fc_dim)
        self.head = nn.Linear(fc_dim, N_OUTPUTS)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc(pooled))  # (B, 2)


def sum_fusion(head: nn.Linear, h_cc: torch.Tensor, h_mlo: torch.Tensor) -> dict[str, torch.Tensor]:
    """Joint/Shared fusion: logits = W (h_cc + h_mlo) + b, with per-view logits z_v = W h_v + b/2.

    Splitting the bias in half makes the per-view logits add up to the fused ones exactly (in exact
    arithmetic), which is what view-utilisation analyses rely on.
    """
    half_bias = head.bias / 2 if head.bias is not None else None
    return {
        "logits": head(h_cc + h_mlo),                      # (B, 2)
        "logits_cc": F.linear(h_cc, head.weight, half_bias),  # (B, 2)
        "logits_mlo": F.linear(h_mlo, head.weight, half_bias),
    }


def mean_probability_logit(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """logit((sigmoid(a) + sigmoid(b)) / 2), computed without overflow.

    With p = (sigmoid(a) + sigmoid(b)) / 2:
      log p     = logaddexp(logsigmoid(a),  logsigmoid(b))  - log 2
      log (1-p) = logaddexp(logsigmoid(-a), logsigmoid(-b)) - log 2
    and logit(p) is their difference (the log 2 cancels). Every term stays finite for finite a, b, so
    BCE-with-logits on the result equals BCE on the averaged probability, also for logits of +-1e4.
    """
    log_p = torch.logaddexp(F.logsigmoid(a), F.logsigmoid(b))
    log_q = torch.logaddexp(F.logsigmoid(-a), F.logsigmoid(-b))
    return log_p - log_q

