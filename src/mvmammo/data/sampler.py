"""Per-epoch negative downsampling, as the paper: each epoch takes every breast with a label (benign or
malignant) plus an equal number of label-free breasts, drawn afresh each epoch.

Every epoch's draw is a pure function of (seed, epoch), so a resumed run sees the same epochs as an
uninterrupted one without carrying sampler state.
"""
from __future__ import annotations

import numpy as np


def epoch_rng(seed: int, epoch: int, stream: int = 0) -> np.random.Generator:
    """An independent generator per (seed, epoch, stream)."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, stream]))


def epoch_rows(rows: np.ndarray, labels: np.ndarray, seed: int, epoch: int, neg_ratio: float = 1.0) -> np.ndarray:
    """The shuffled rows of one training epoch.

    rows: (N,) cache rows of the training split; labels: (N, 2) benign, malignant for those rows.
    Returns all rows with any positive label plus round(neg_ratio * n_pos) rows without (all of them
    if there are fewer), shuffled.
    """
    rows = np.asarray(rows)
    positive = labels.max(axis=1) > 0
    pos, neg = rows[positive], rows[~positive]
    rng = epoch_rng(seed, epoch)
    n_neg = min(len(neg), int(round(neg_ratio * len(pos))))
    picked = rng.choice(neg, size=n_neg, replace=False) if n_neg else neg[:0]
    out = np.concatenate([pos, picked])
    rng.shuffle(out)
    return out


def batches(order: np.ndarray, batch_size: int, drop_last: bool = False) -> list[np.ndarray]:
    n = len(order)
    stop = n - n % batch_size if drop_last else n
    return [order[i:i + batch_size] for i in range(0, stop, batch_size)]
