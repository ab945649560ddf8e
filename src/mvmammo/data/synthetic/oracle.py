"""The oracle: the best AUC any model could reach from CC only, MLO only and both views.

The generator knows, per breast and view, whether a lesion of each class was drawn (columns
``{cc,mlo}_{benign,malignant}_visible``). A drawn lesion of a class is never confused with "no lesion" by the
oracle and label-free breasts never carry one, so P(label | view's indicator) is 1 when the indicator is on
and a small constant otherwise: the indicator itself is the Bayes-optimal score of that view (AUC only needs
the ranking), and the OR of the two indicators is the Bayes-optimal score of the pair. Ties count 1/2.
The spurious cue and the heatmaps are deliberately not part of the oracle: the cue carries no lesion
information and the heatmaps are noisy copies of the visibility indicators.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

LABELS = ("malignant", "benign")


def auc(y, score) -> float:
    """Area under the ROC curve (Mann-Whitney, ties 1/2); nan when one class is absent."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(score, dtype=float)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def oracle_aucs(df: pd.DataFrame, label: str = "malignant") -> dict:
    """{"auc_cc", "auc_mlo", "auc_both"} of the visibility oracle for one label on the rows of df."""
    y = df[label].astype(int).to_numpy()
    cc = df[f"cc_{label}_visible"].astype(int).to_numpy()
    mlo = df[f"mlo_{label}_visible"].astype(int).to_numpy()
    return {"auc_cc": auc(y, cc), "auc_mlo": auc(y, mlo), "auc_both": auc(y, np.maximum(cc, mlo))}


def _clean(d):
    """nan -> None so the JSON is valid."""
    if isinstance(d, dict):
        return {k: _clean(v) for k, v in d.items()}
    if isinstance(d, float) and math.isnan(d):
        return None
    return d


def compute_oracle(df: pd.DataFrame, split: str = "test") -> dict:
    """Oracle AUCs on ``split`` (top-level keys: malignant), per label, and on every split for reference."""
    sub = df[df["split"] == split]
    out = {"split": split, "n_breasts": int(len(sub)), "n_malignant": int(sub["malignant"].sum()),
           "n_benign": int(sub["benign"].sum())}
    per_label = {lab: oracle_aucs(sub, lab) for lab in LABELS}
    out.update(per_label["malignant"])
    out.update(per_label)
    out["by_split"] = {s: {lab: oracle_aucs(df[df["split"] == s], lab) for lab in LABELS}
                       for s in ("train", "val", "test")}
    out["all"] = {lab: oracle_aucs(df, lab) for lab in LABELS}
    return _clean(out)


def write_oracle(oracle: dict, out_dir: str | Path) -> None:
    Path(out_dir, "oracle.json").write_text(json.dumps(oracle, indent=2) + "\n")


def load_oracle(out_dir: str | Path) -> dict:
    """The oracle.json of a generated cohort (keys auc_cc, auc_mlo, auc_both, malignant, benign, by_split)."""
    path = Path(out_dir) / "oracle.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no oracle; generate the cohort first (mvmammo synth --out {out_dir})")
    return json.loads(path.read_text())
