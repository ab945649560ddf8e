"""Per-epoch negative downsampling, as the paper (SPEC section 2): each epoch takes every exam with a biopsy
record (a breast labelled benign or malignant) plus neg_ratio x as many exams without one, drawn afresh each
epoch, with BOTH breasts of every chosen exam (sampling="exam", the default). So the negative breast of a
biopsied exam comes along: about 1 positive breast to 3 negative ones at neg_ratio 1 when most biopsied
exams have one positive breast. sampling="breast" is the variant that samples breasts instead: every
labelled breast plus neg_ratio x as many label-free ones (1:1 at neg_ratio 1).

Every epoch's draw is a pure function of (seed, epoch), so a resumed run sees the same epochs as an
uninterrupted one without carrying sampler state.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from mvmammo.errors import UsageError

SAMPLING = ("exam", "breast")


class SamplingError(UsageError, ValueError):
    """data.sampling cannot be applied to this table; the message says what to do."""


def epoch_rng(seed: int, epoch: int, stream: int = 0) -> np.random.Generator:
    """An independent generator per (seed, epoch, stream)."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, stream]))


def exam_keys(index: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """(N,) int exam number of each row: rows share a number iff they have the same (patient_id, exam_id)."""
    missing = [c for c in ("patient_id", "exam_id") if c not in index.columns]
    if missing:
        raise SamplingError(f"data.sampling=exam needs the exam table's {' and '.join(missing)} column(s) "
                            "(in the cache index); add them, or set data.sampling=breast")
    sub = index.iloc[np.asarray(rows)]
    pairs = sub["patient_id"].astype(str) + "\x1f" + sub["exam_id"].astype(str)
    return pd.factorize(pairs, sort=True)[0]


def _draw(pos: np.ndarray, neg: np.ndarray, neg_ratio: float, rng: np.random.Generator) -> np.ndarray:
    """All of pos plus round(neg_ratio * len(pos)) of neg drawn without replacement (all of neg if fewer)."""
    n_neg = min(len(neg), int(round(neg_ratio * len(pos))))
    picked = rng.choice(neg, size=n_neg, replace=False) if n_neg else neg[:0]
    return np.concatenate([pos, picked])


def epoch_rows(rows: np.ndarray, labels: np.ndarray, seed: int, epoch: int, neg_ratio: float = 1.0,
               sampling: str = "breast", index: pd.DataFrame | None = None) -> np.ndarray:
    """The shuffled rows of one training epoch.

    rows: (N,) cache rows of the training split; labels: (N, 2) benign, malignant for those rows.
    sampling="breast": all rows with a positive label plus round(neg_ratio * n_pos) rows without.
    sampling="exam": index (the cache index: patient_id, exam_id per cache row) groups rows into exams; an
    exam is positive when any of its rows is; all positive exams plus round(neg_ratio * n_pos_exams)
    negative exams, every row of each chosen exam. Fewer negatives than asked for: all of them.
    """
    rows = np.asarray(rows)
    positive = np.asarray(labels).max(axis=1) > 0
    rng = epoch_rng(seed, epoch)
    if sampling == "breast":
        out = _draw(rows[positive], rows[~positive], neg_ratio, rng)
    elif sampling == "exam":
        if index is None:
            raise SamplingError("data.sampling=exam needs the cache index (patient_id, exam_id per row)")
        exam = exam_keys(index, rows)  # (N,) 0..E-1
        exam_pos = np.zeros(int(exam.max()) + 1 if len(exam) else 0, dtype=bool)
        np.logical_or.at(exam_pos, exam, positive)
        ids = np.arange(len(exam_pos))
        chosen = np.zeros(len(exam_pos), dtype=bool)
        chosen[_draw(ids[exam_pos], ids[~exam_pos], neg_ratio, rng)] = True
        out = rows[chosen[exam]]
    else:
        raise SamplingError(f"data.sampling={sampling!r}; use one of {', '.join(SAMPLING)}")
    rng.shuffle(out)
    return out


def subsample_rows(order: np.ndarray, labels: np.ndarray, fraction: float, seed: int, epoch: int,
                   index: pd.DataFrame | None = None) -> np.ndarray:
    """A fraction of one epoch's rows, drawn separately among its positive and negative units, sorted.

    order: (N,) the epoch's rows; labels: (N, 2) theirs. The unit is the exam when index is given (both
    breasts of a drawn exam are in), else the breast. At least one unit of each kind present is drawn, so
    the subsample keeps both classes (Loss Change Allocation's per-epoch subsample: 10% of both kinds).
    """
    order = np.asarray(order)
    if not 0.0 < fraction <= 1.0:
        raise SamplingError(f"run.lca_fraction={fraction}: must be in (0, 1]")
    positive = np.asarray(labels).max(axis=1) > 0
    units = exam_keys(index, order) if index is not None else np.arange(len(order))
    unit_pos = np.zeros(int(units.max()) + 1 if len(units) else 0, dtype=bool)
    np.logical_or.at(unit_pos, units, positive)
    rng = epoch_rng(seed, epoch, stream=0x1CA)  # LCA's own stream: the epoch's draw is not disturbed
    keep = np.zeros(len(unit_pos), dtype=bool)
    for kind in (unit_pos, ~unit_pos):
        ids = np.flatnonzero(kind)
        if len(ids):
            k = max(1, int(round(fraction * len(ids))))
            keep[rng.choice(ids, size=k, replace=False)] = True
    return np.sort(order[keep[units]])


def batches(order: np.ndarray, batch_size: int, drop_last: bool = False) -> list[np.ndarray]:
    n = len(order)
    stop = n - n % batch_size if drop_last else n
    return [order[i:i + batch_size] for i in range(0, stop, batch_size)]
