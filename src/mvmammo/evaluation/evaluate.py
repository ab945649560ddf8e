"""Evaluate a run folder: TTA predictions on a split (predictions.csv) and AUCs with CIs (metrics.json)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from mvmammo import LABELS
from mvmammo.evaluation import metrics
from mvmammo.evaluation.loading import open_run
from mvmammo.evaluation.predict import breast_level, predict_rows, predictions_table


def evaluate_run(run_dir: str | Path, split: str = "test", tta: int | None = None, checkpoint: str = "best",
                 n_boot: int = 1000, device: str | None = None, progress: bool = False) -> dict:
    run = open_run(run_dir, checkpoint, device, progress)
    run_dir, cfg, cache, model, maker = run.run_dir, run.cfg, run.cache, run.model, run.maker
    tta = cfg.run.tta if tta is None else tta
    rows = cache.rows(split)
    probs = predict_rows(model, maker, rows, tta=tta, batch_size=max(cfg.optim.batch_size, 32),
                         seed=cfg.run.seed, precision=cfg.run.precision)
    pred = predictions_table(cache, rows, probs, seed=cfg.run.seed, run_name=run_dir.name)
    pred.to_csv(run_dir / f"predictions_{split}.csv", index=False)
    result = {"split": split, "tta": tta, "checkpoint": checkpoint, **auc_report(breast_level(pred), n_boot)}
    (run_dir / f"metrics_{split}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def auc_report(breasts: pd.DataFrame, n_boot: int = 1000) -> dict:
    """Per label: AUC, DeLong 95% CI, patient-level bootstrap 95% CI."""
    out = {}
    groups = breasts["patient_id"].astype(str).to_numpy()
    for label in LABELS:
        y = breasts[label].to_numpy().astype(int)
        s = breasts[f"p_{label}"].to_numpy()
        out[label] = metrics.summarize_auc(y, s, groups, n_boot=n_boot)
    return out


def load_predictions(run_dir: str | Path, split: str = "test") -> pd.DataFrame:
    path = Path(run_dir) / f"predictions_{split}.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not evaluated yet; run `mvmammo evaluate {run_dir}`")
    return pd.read_csv(path, dtype={"breast_id": str, "patient_id": str})


def paired_test(run_a: str | Path, run_b: str | Path, split: str = "test", label: str = "malignant"
                ) -> "metrics.PairedTest":
    """Paired DeLong test of two runs' breast-level predictions on the same breasts."""
    a = breast_level(load_predictions(run_a, split)).set_index("breast_id")
    b = breast_level(load_predictions(run_b, split)).set_index("breast_id")
    common = a.index.intersection(b.index)
    if len(common) != len(a) or len(common) != len(b):
        raise ValueError(f"{run_a} and {run_b} were evaluated on different breasts; a paired test needs the same")
    y = a.loc[common, label].to_numpy().astype(int)
    return metrics.delong_paired_test(y, a.loc[common, f"p_{label}"].to_numpy(), b.loc[common, f"p_{label}"].to_numpy())
