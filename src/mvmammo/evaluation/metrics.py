"""Breast-level AUC with honest uncertainty: Mann-Whitney AUC, DeLong variance/CI/paired test, and the
patient-level (cluster) bootstrap. Pure functions on numpy arrays; no torch.

Conventions
  - ``y``: 0/1 labels (one task at a time, e.g. malignant), ``score``: higher = more likely positive.
  - Ties between a positive and a negative count 1/2 (the Mann-Whitney / trapezoidal ROC AUC).
  - When a class is absent (or, for DeLong, has fewer than 2 members) the statistic is undefined: the
    functions return nan and emit a ``RuntimeWarning`` naming the reason, rather than raise, so a table
    over many splits/seeds still fills in.
  - DeLong by the fast midrank algorithm of Sun & Xu (2014): O(N log N) per score vector instead of the
    O(m n) pairwise kernel.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
from scipy import special, stats

# Bootstrap chunking: at most this many (resample x breast) weights in memory at once (~40 MB of float64).
_MAX_CHUNK_CELLS = 5_000_000


def _as_labels_scores(y, score) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    score = np.asarray(score, dtype=np.float64)
    if y.ndim != 1 or score.ndim != 1 or y.shape != score.shape:
        raise ValueError(f"y and score must be 1-D of equal length, got shapes {y.shape} and {score.shape}")
    if y.dtype == bool:
        y = y.astype(np.int64)
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"y must hold 0/1 labels, got values {np.unique(y)[:10]}")
    if not np.isfinite(score).all():
        raise ValueError("score holds nan or inf; drop or impute those breasts before computing AUC")
    return y.astype(np.int64), score


def _undefined(what: str, n_pos: int, n_neg: int, need: int = 1) -> bool:
    """True (and a warning) when a class has fewer than ``need`` members."""
    if n_pos >= need and n_neg >= need:
        return False
    warnings.warn(f"{what} undefined: needs at least {need} positive and {need} negative breast(s), "
                  f"got {n_pos} positive and {n_neg} negative; returning nan", RuntimeWarning, stacklevel=3)
    return True


def auc(y, score) -> float:
    """ROC AUC = P(score_pos > score_neg) + 1/2 P(tie), by midranks (Mann-Whitney U / (m n))."""
    y, score = _as_labels_scores(y, score)
    m, n = int(y.sum()), int(len(y) - y.sum())
    if _undefined("AUC", m, n):
        return float("nan")
    ranks = stats.rankdata(score)  # midranks: ties share their average rank
    return float((ranks[y == 1].sum() - m * (m + 1) / 2) / (m * n))


# ---------------------------------------------------------------- DeLong (Sun & Xu 2014)
def _placements(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Structural components for k score vectors ``scores`` (k, N).

    V10[r, i] = fraction of negatives below positive i (ties 1/2) = (Tz_i - Tx_i) / n,
    V01[r, j] = fraction of positives above negative j (ties 1/2) = 1 - (Tz_{m+j} - Ty_j) / m,
    with Tz the midranks in the pooled sample, Tx/Ty the midranks within positives/negatives.
    Returns (aucs (k,), V10 (k, m), V01 (k, n)); each AUC is the mean of either component.
    """
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    tz = stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    tx = stats.rankdata(pos, axis=1)
    ty = stats.rankdata(neg, axis=1)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return v10.mean(axis=1), v10, v01


def _delong_cov(v10: np.ndarray, v01: np.ndarray) -> np.ndarray:
    """(k, k) covariance of the k AUC estimates: S10 / m + S01 / n (sample covariances, ddof 1)."""
    m, n = v10.shape[1], v01.shape[1]
    return np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n


def delong_var(y, score) -> float:
    """DeLong's variance of the AUC estimate (nan with a warning if a class has < 2 breasts)."""
    y, score = _as_labels_scores(y, score)
    m, n = int(y.sum()), int(len(y) - y.sum())
    if _undefined("DeLong variance", m, n, need=2):
        return float("nan")
    _, v10, v01 = _placements(y, score[None, :])
    return float(_delong_cov(v10, v01)[0, 0])


def delong_ci(y, score, level: float = 0.95, transform: str = "plain") -> tuple[float, float]:
    """Normal-approximation CI for the AUC with DeLong's standard error, clipped to [0, 1].

    ``transform="plain"`` (default; what pROC and most papers report): AUC +- z * se.
    ``transform="logit"``: the interval is built on logit(AUC) with se / (AUC (1 - AUC)) (delta method) and
    mapped back, so it stays inside (0, 1) and is asymmetric near 1, which covers better for the few
    positives and high AUCs of screening data. At AUC 0 or 1 (zero variance) both give (AUC, AUC).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if transform not in ("plain", "logit"):
        raise ValueError(f"transform must be 'plain' or 'logit', got {transform!r}")
    a, v = auc(y, score), delong_var(y, score)
    if np.isnan(a) or np.isnan(v):
        return float("nan"), float("nan")
    z = stats.norm.ppf(0.5 + level / 2)
    se = np.sqrt(max(v, 0.0))
    if transform == "plain" or a in (0.0, 1.0):
        lo, hi = a - z * se, a + z * se
    else:
        half = z * se / (a * (1 - a))
        lo, hi = special.expit(special.logit(a) - half), special.expit(special.logit(a) + half)
    return float(np.clip(lo, 0, 1)), float(np.clip(hi, 0, 1))


class PairedTest(NamedTuple):
    auc_a: float
    auc_b: float
    diff: float  # auc_a - auc_b
    z: float
    p_value: float  # two-sided


def delong_paired_test(y, score_a, score_b) -> PairedTest:
    """DeLong's test of AUC_a == AUC_b for two models scored on the same breasts.

    z = (AUC_a - AUC_b) / sqrt(Var_a + Var_b - 2 Cov_ab), two-sided normal p-value. Identical scores give
    z 0, p 1; any other zero-variance case (degenerate placements) gives nan z and p with a warning.
    """
    y, a = _as_labels_scores(y, score_a)
    _, b = _as_labels_scores(y, score_b)
    m, n = int(y.sum()), int(len(y) - y.sum())
    nan = float("nan")
    if _undefined("DeLong paired test", m, n, need=2):
        return PairedTest(nan, nan, nan, nan, nan)
    aucs, v10, v01 = _placements(y, np.stack([a, b]))
    cov = _delong_cov(v10, v01)
    diff = float(aucs[0] - aucs[1])
    var_diff = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    if var_diff <= 1e-15:
        if np.array_equal(v10[0], v10[1]) and np.array_equal(v01[0], v01[1]):
            return PairedTest(float(aucs[0]), float(aucs[1]), diff, 0.0, 1.0)
        warnings.warn("DeLong paired test: the AUC difference has zero estimated variance; z and p are "
                      "undefined", RuntimeWarning, stacklevel=2)
        return PairedTest(float(aucs[0]), float(aucs[1]), diff, nan, nan)
    z = diff / np.sqrt(var_diff)
    return PairedTest(float(aucs[0]), float(aucs[1]), diff, float(z), float(2 * stats.norm.sf(abs(z))))


# ---------------------------------------------------------------- patient-level bootstrap
def _weighted_aucs(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUCs for many weightings (R, N) of the same breasts at once (weight = times a breast was drawn).

    Sort once; per distinct score value sum positive and negative weight; then
    AUC = sum_v Wpos(v) (Wneg(< v) + Wneg(= v) / 2) / (Wpos Wneg). nan where a class got weight 0.
    """
    order = np.argsort(score, kind="stable")
    s, ys, w = score[order], y[order], weights[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])           # first index of each distinct value
    w_pos = np.add.reduceat(w * ys, starts, axis=1)                  # (R, U)
    w_neg = np.add.reduceat(w * (1 - ys), starts, axis=1)            # (R, U)
    neg_below = np.cumsum(w_neg, axis=1) - w_neg                     # negative weight strictly below
    num = (w_pos * (neg_below + w_neg / 2)).sum(axis=1)
    den = w_pos.sum(axis=1) * w_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def bootstrap_aucs(y, score, groups=None, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """AUCs of ``n_boot`` cluster-bootstrap resamples (nan for resamples that lack a class).

    Patients (``groups``; None = every breast its own patient) are drawn with replacement, as many as there
    are; each drawn patient brings all of its breasts. Drawing G patients with replacement and counting is a
    Multinomial(G, 1/G) draw of per-patient counts, which becomes each breast's weight.
    """
    y, score = _as_labels_scores(y, score)
    if groups is None:
        groups = np.arange(len(y))
    groups = np.asarray(groups)
    if groups.shape != y.shape:
        raise ValueError(f"groups must have one entry per breast, got shape {groups.shape} for {y.shape}")
    _, patient = np.unique(groups, return_inverse=True)  # (N,) patient index of each breast
    n_patients = int(patient.max()) + 1
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_CHUNK_CELLS // max(len(y), 1))
    out = []
    for start in range(0, n_boot, chunk):
        r = min(chunk, n_boot - start)
        counts = rng.multinomial(n_patients, np.full(n_patients, 1.0 / n_patients), size=r)  # (r, G)
        out.append(_weighted_aucs(y, score, counts[:, patient].astype(np.float64)))
    return np.concatenate(out) if out else np.empty(0)


def bootstrap_ci(y, score, groups=None, n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile CI of the AUC from the patient-level bootstrap; resamples with one class are skipped."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    aucs = bootstrap_aucs(y, score, groups, n_boot=n_boot, seed=seed)
    valid = aucs[~np.isnan(aucs)]
    if len(valid) < len(aucs):
        warnings.warn(f"bootstrap: {len(aucs) - len(valid)} of {len(aucs)} resamples lacked a class and were "
                      "skipped", RuntimeWarning, stacklevel=2)
    if len(valid) == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(valid, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def summarize_auc(y, score, groups=None, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> dict:
    """One row for a results table: AUC, DeLong se and CI (plain), patient-bootstrap CI, class counts."""
    y_arr, score_arr = _as_labels_scores(y, score)
    n_pos = int(y_arr.sum())
    a, v = auc(y_arr, score_arr), delong_var(y_arr, score_arr)
    d_lo, d_hi = delong_ci(y_arr, score_arr, level=level)
    b_lo, b_hi = bootstrap_ci(y_arr, score_arr, groups, n_boot=n_boot, level=level, seed=seed)
    n_patients = len(np.unique(groups)) if groups is not None else len(y_arr)
    return {"auc": a, "delong_se": float(np.sqrt(v)) if not np.isnan(v) else float("nan"),
            "delong_lo": d_lo, "delong_hi": d_hi, "boot_lo": b_lo, "boot_hi": b_hi, "level": level,
            "n_pos": n_pos, "n_neg": int(len(y_arr) - n_pos), "n_patients": n_patients, "n_boot": n_boot}
