"""Predictions with test-time augmentation: the table every metric, ensemble and plot reads.

TTA is an explicit choice: tta=0 is the deterministic centre window; tta=k > 0 draws k random windows per
breast (the training augmentation, from a generator seeded per (seed, window index) so predictions are
reproducible) and the breast's prediction is the mean of the k probabilities.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from mvmammo import LABELS
from mvmammo.data.sampler import batches


@torch.no_grad()
def predict_rows(model: torch.nn.Module, maker, rows: np.ndarray, tta: int = 0, batch_size: int = 32,
                 seed: int = 0, precision: str = "fp32") -> np.ndarray:
    """Probabilities (n_windows, N, 2) for benign, malignant; n_windows = max(tta, 1)."""
    was_training = model.training
    model.eval()
    n_windows = max(tta, 1)
    # One generator per window index, each advanced chunk by chunk: the same boxes as a window-outer loop,
    # but every breast is loaded (and sent to the device) once for all its windows.
    gens = [torch.Generator().manual_seed(int(seed) * 1000 + t) if tta > 0 else None for t in range(n_windows)]
    chunks = batches(np.asarray(rows), batch_size)
    probs: list[list[torch.Tensor]] = [[] for _ in range(n_windows)]
    for rows_c, raw, labels in maker.loaded(chunks):
        for t in range(n_windows):
            batch = maker.assemble(rows_c, raw, labels, train=tta > 0, generator=gens[t])
            with torch.autocast(maker.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = model(batch["cc"], batch["mlo"])["logits"]
            probs[t].append(torch.sigmoid(logits.float()))  # stays on the device: one copy at the end
    model.train(was_training)
    if not len(rows):
        return np.zeros((n_windows, 0, 2), dtype=np.float64)
    return torch.stack([torch.cat(p) for p in probs]).cpu().double().numpy()


def predictions_table(cache, rows: np.ndarray, probs: np.ndarray, seed: int, run_name: str) -> pd.DataFrame:
    """Long table: one line per (breast, window) plus the window average as tta_index = -1."""
    index = cache.index.iloc[rows].reset_index(drop=True)
    frames = []
    n_windows = probs.shape[0]
    for t in list(range(n_windows)) + [-1]:
        p = probs.mean(axis=0) if t == -1 else probs[t]
        f = pd.DataFrame({
            "run": run_name, "seed": seed, "breast_id": index["breast_id"],
            "patient_id": index["patient_id"], "split": index["split"], "tta_index": t,
        })
        for j, label in enumerate(LABELS):
            f[f"p_{label}"] = p[:, j]
            f[label] = index[label].to_numpy()
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def breast_level(pred: pd.DataFrame) -> pd.DataFrame:
    """The averaged (tta_index == -1) rows: one per breast."""
    return pred[pred["tta_index"] == -1].reset_index(drop=True)
