"""Ensembles average prediction tables; they never reload models."""
from __future__ import annotations

import pandas as pd

from mvmammo import LABELS
from mvmammo.evaluation.predict import breast_level


def ensemble(preds: list[pd.DataFrame]) -> pd.DataFrame:
    """Breast-level mean of several runs' averaged (TTA) probabilities; labels must agree."""
    if not preds:
        raise ValueError("nothing to ensemble")
    frames = [breast_level(p).set_index("breast_id") for p in preds]
    base = frames[0]
    for f in frames[1:]:
        if set(f.index) != set(base.index):
            raise ValueError("ensemble members were evaluated on different breasts")
    out = base[["patient_id", "split", *LABELS]].copy()
    for label in LABELS:
        out[f"p_{label}"] = sum(f.loc[base.index, f"p_{label}"] for f in frames) / len(frames)
    out["tta_index"] = -1
    return out.reset_index()
