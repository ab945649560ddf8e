"""Evaluation inside training: centre-window AUCs and loss on some rows (validation after every epoch, and
the held-out V of gradient blending). The loop and its hooks share it, so every curve is on one scale."""
from __future__ import annotations

import numpy as np

from mvmammo.config import Config
from mvmammo.evaluation.metrics import auc
from mvmammo.evaluation.predict import predict_rows


def auc_or_nan(y: np.ndarray, s: np.ndarray) -> float:
    return float(auc(y, s)) if 0 < y.sum() < len(y) else float("nan")


def evaluate_rows(model, maker, rows: np.ndarray, cfg: Config) -> dict:
    """{auc_benign, auc_malignant, loss}: centre window, eval mode, the summed per-label mean BCE."""
    probs = predict_rows(model, maker, rows, tta=0, batch_size=max(cfg.optim.batch_size, 16),
                         precision=cfg.run.precision)[0]
    y = maker.cache.labels(rows)
    eps = 1e-7
    p = np.clip(probs, eps, 1 - eps)
    loss = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(0).sum())
    return {"auc_benign": auc_or_nan(y[:, 0], probs[:, 0]), "auc_malignant": auc_or_nan(y[:, 1], probs[:, 1]),
            "loss": loss}
