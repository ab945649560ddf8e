"""Linear probes on frozen features: L2-regularised logistic regression (numpy, float64, Newton).

scikit-learn is only a test dependency, so this is a small self-contained version with sklearn's
objective: C * sum_i BCE_i + 1/2 ||w||^2 (bias not penalised), written here as
mean_i BCE_i + ||w||^2 / (2 C N) so the scale does not grow with N. Features are standardised with the
training mean and standard deviation first (ReLU features have very different scales per unit).
C is chosen on a validation split by AUC; the probe is then scored on the evaluation split.
"""
from __future__ import annotations

import warnings

import numpy as np

from mvmammo.evaluation.metrics import auc

C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def _objective(z: np.ndarray, y: np.ndarray, w: np.ndarray, b: float, lam: float) -> float:
    s = z @ w + b
    return float(np.mean(np.logaddexp(0.0, s) - y * s) + lam * (w @ w))  # mean BCE + L2


def fit_logreg(x: np.ndarray, y: np.ndarray, c: float, max_iter: int = 50, w0: np.ndarray | None = None,
               b0: float | None = None) -> tuple[np.ndarray, float]:
    """Weights (F,) and bias for features x (N, F) and 0/1 labels y (N,), by damped Newton steps.

    The objective is strictly convex (lam > 0), so Newton with step halving converges; each step solves
    one (F + 1) x (F + 1) system, which for F = 512 is milliseconds (float64 numpy).
    """
    z = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, f = z.shape
    lam = 1.0 / (2.0 * c * n)
    p0 = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
    w = np.zeros(f) if w0 is None else w0.copy()
    b = float(np.log(p0 / (1 - p0))) if b0 is None else float(b0)  # start at the prior
    za = np.hstack([z, np.ones((n, 1))])  # (N, F + 1): the bias as a last column
    reg = np.full(f + 1, 2.0 * lam)
    reg[-1] = 0.0  # bias not penalised
    obj = _objective(z, y, w, b, lam)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(z @ w + b)))
        grad = za.T @ (p - y) / n + reg * np.r_[w, b]
        hess = (za * (p * (1 - p))[:, None]).T @ za / n + np.diag(reg + 1e-10)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-4:  # backtracking: accept the first step size that lowers the objective
            w_new, b_new = w - t * step[:-1], b - t * step[-1]
            new = _objective(z, y, w_new, b_new, lam)
            if new <= obj:
                break
            t *= 0.5
        else:
            break
        done = obj - new < 1e-10 * max(1.0, abs(obj))
        w, b, obj = w_new, b_new, new
        if done:
            break
    return w, b


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return auc(y, s)


def probe(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
          test: tuple[np.ndarray, np.ndarray], grid=C_GRID) -> dict:
    """Fit on train, pick C by validation AUC, report {"auc": test AUC, "val_auc", "C"} (nan if undefined)."""
    (xtr, ytr), (xva, yva), (xte, yte) = train, val, test
    if ytr.min() == ytr.max():
        return {"auc": float("nan"), "val_auc": float("nan"), "C": float("nan")}
    mu, sd = xtr.mean(0), xtr.std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)  # dead units: leave as 0 after centring
    z = [(x - mu) / sd for x in (xtr, xva, xte)]
    best, w, b = None, None, None
    for c in sorted(grid):  # strongest penalty first; each fit warm-starts the next
        w, b = fit_logreg(z[0], ytr, c, w0=w, b0=b)
        v = _auc(yva, z[1] @ w + b)
        if best is None or (np.isfinite(v) and (not np.isfinite(best[0]) or v > best[0])):
            best = (v, c, w, b)
    v, c, w, b = best
    return {"auc": _auc(yte, z[2] @ w + b), "val_auc": float(v), "C": float(c)}
