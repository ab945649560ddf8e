"""A held-out part V of the TRAINING split (gradient blending's stand-in for the "true" loss L*).

G-Blend (methods.md 1.1) measures overfitting as L_V - L_T' on a subset V carved out of the training set,
never on the real validation split (which selects checkpoints). With data.holdout_fraction > 0 the loop
trains on T' = train \\ V only and :class:`HoldoutEval` logs losses and AUCs on V and on T' every epoch.

The split is by patient (no patient in both T' and V, as everywhere else) and stratified by the patient's
worst label (malignant > benign > neither), so the rare malignant patients are split in proportion too.
It is a pure function of (the cache index, fraction, seed): the loop and the hook compute it separately
and always agree, also after a resume.
"""
from __future__ import annotations

import numpy as np


def split_holdout(patients: np.ndarray, labels: np.ndarray, rows: np.ndarray, fraction: float, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(T' rows, V rows), both sorted.

    patients: (N,) patient ids of ``rows``; labels: (N, 2) benign, malignant of ``rows``; rows: (N,) cache
    rows of the training split. About ``fraction`` of the patients of each stratum go to V; a stratum with
    at least 2 patients gives V at least one (so V has positives whenever T does).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"data.holdout_fraction must be in [0, 1), got {fraction}")
    rows = np.asarray(rows)
    if fraction == 0.0 or len(rows) == 0:
        return rows, rows[:0]
    patients = np.asarray(patients).astype(str)
    # Stratum of a breast: 2 malignant, 1 benign only, 0 neither; a patient's stratum is the max over breasts.
    breast_stratum = np.where(labels[:, 1] > 0, 2, np.where(labels[:, 0] > 0, 1, 0))
    uniq, inverse = np.unique(patients, return_inverse=True)
    patient_stratum = np.zeros(len(uniq), dtype=np.int64)
    np.maximum.at(patient_stratum, inverse, breast_stratum)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x56]))  # 0x56 = "V": its own stream
    in_v = np.zeros(len(uniq), dtype=bool)
    for s in (0, 1, 2):
        members = np.flatnonzero(patient_stratum == s)
        if len(members) == 0:
            continue
        k = int(round(fraction * len(members)))
        if k == 0 and len(members) >= 2:
            k = 1
        in_v[rng.permutation(members)[:k]] = True
    v_mask = in_v[inverse]
    return np.sort(rows[~v_mask]), np.sort(rows[v_mask])


def cache_split(cache, data_cfg) -> tuple[np.ndarray, np.ndarray]:
    """(T' rows, V rows) of a window cache's training split for a DataConfig."""
    rows = cache.rows("train")
    patients = cache.index["patient_id"].to_numpy()[rows]
    return split_holdout(patients, cache.labels(rows), rows, data_cfg.holdout_fraction, data_cfg.holdout_seed)


class HoldoutEval:
    """Loop hook: loss and AUCs on V (``holdout_*``) and on T' (``train_eval_*``) after every epoch.

    Both use the evaluation path of the validation split (centre window, eval mode, no view dropping) and
    the training loss definition (sum of the benign and malignant mean BCEs), so L_V and L_T' are on the
    same scale and the same class mix (the stratified split keeps it). The state before any training
    (G-Blend's window may start at epoch 0) is logged in the first epoch's line as ``init_*``.
    """

    def __init__(self):
        self.init: dict = {}

    def _measure(self, ctx) -> dict:
        from mvmammo.training.validation import evaluate_rows

        t_rows, v_rows = cache_split(ctx.maker.cache, ctx.cfg.data)
        out = {}
        for prefix, rows in (("holdout", v_rows), ("train_eval", t_rows)):
            r = evaluate_rows(ctx.model, ctx.maker, rows, ctx.cfg)
            out.update({f"{prefix}_loss": r["loss"], f"{prefix}_auc_malignant": r["auc_malignant"],
                        f"{prefix}_auc_benign": r["auc_benign"]})
        out["holdout_breasts"] = int(len(v_rows))
        return out

    def on_train_start(self, ctx) -> dict:
        self.init = {}
        if ctx.epoch == 0:  # a fresh run (a resumed one logged its epoch-0 line already)
            self.init = {f"init_{k}": v for k, v in self._measure(ctx).items() if k != "holdout_breasts"}
        return {}

    def on_epoch_end(self, ctx) -> dict:
        out = self._measure(ctx)
        if ctx.epoch == 0:
            out.update(self.init)
        return out


def training_rows(cache, rows: np.ndarray, cfg) -> np.ndarray:
    """The rows the loop trains on: the training split minus the held-out V, if data.holdout_fraction > 0."""
    if cfg.data.holdout_fraction <= 0:
        return rows
    t_rows, v_rows = cache_split(cache, cfg.data)
    if cfg.run.progress:
        print(f"holding out {len(v_rows)} of {len(t_rows) + len(v_rows)} training breasts as V "
              f"(data.holdout_fraction={cfg.data.holdout_fraction}); training on the other {len(t_rows)}")
    return t_rows


def hooks(cfg) -> list:
    """Losses and AUCs on the held-out V every epoch, when there is one."""
    return [HoldoutEval()] if cfg.data.holdout_fraction > 0 else []
