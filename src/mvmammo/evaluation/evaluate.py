"""Evaluate a run folder: TTA predictions on a split of its own table, or on any labelled table (external
validation), as predictions_<name>.csv, and AUCs with DeLong and bootstrap CIs as metrics_<name>.json."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from mvmammo import LABELS
from mvmammo.evaluation import metrics
from mvmammo.evaluation.apply import has_heatmaps, load_table, run_cache, windowed_table, write_csv_atomic
from mvmammo.evaluation.loading import RunError, load_model, open_run, run_config
from mvmammo.evaluation.predict import breast_level, predict_rows, predictions_table
from mvmammo.runlock import hold_run
from mvmammo.training.inputs import cache_root, maker_for


def external_name(table: str | Path, split: str = "all") -> str:
    """The result name of an evaluation on another table: external-<table stem>[-<split>].

    A table called exams.csv / table.csv (what importers write) is named by its folder instead.
    """
    table = Path(table)
    stem = table.parent.resolve().name if table.stem.lower() in ("exams", "table") else table.stem
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem) or "table"
    return f"external-{stem}" + ("" if split == "all" else f"-{split}")


def select_rows(cache, split: str, run_dir: Path, table: str | Path) -> np.ndarray:
    """Cache rows of ``split`` ("all" = every row); an unknown split is one error line listing those present."""
    if split == "all":
        rows = np.arange(len(cache))
    else:
        rows = cache.rows(split)
    if not len(rows):
        present = sorted(set(cache.index["split"].astype(str)))
        raise RunError(f"{run_dir}: split {split!r} has no breasts in {table}; splits present: "
                       f"{', '.join(present)} (or all); pass --split with one of them")
    return rows


def evaluate_run(run_dir: str | Path, split: str = "test", tta: int | None = None, checkpoint: str = "best",
                 n_boot: int = 1000, device: str | None = None, progress: bool = False,
                 table: str | Path | None = None, heatmaps=None) -> dict:
    """TTA predictions and AUCs on ``split`` of the run's table, or of any labelled ``table`` (external validation).

    Writes predictions_<name>.csv and metrics_<name>.json into the run folder, holding its lock; <name> is
    the split for the run's own table, :func:`external_name` for another table. Nothing else is touched.
    heatmaps: as :func:`mvmammo.evaluation.apply.predict_table`'s, for a run with heatmap channels and an
    external table without them.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        run_config(run_dir)  # raises the one-line RunError (no folder / not a run folder) before any lock file
    with hold_run(run_dir, "evaluate"):
        if table is None:
            run = open_run(run_dir, checkpoint, device, progress)
            cfg, cache, model, maker = run.cfg, run.cache, run.model, run.maker
            source, name, dropped = cfg.data.table or "the synthetic cohort", split, 0
        else:
            lm = load_model(run_dir, checkpoint, device)
            cfg, model, name = lm.cfg, lm.model, external_name(table, split)
            work, given = cache_root(cfg) / "external" / name, table
            if heatmaps is not None and lm.in_channels == 3 and not has_heatmaps(load_table(Path(table), True)):
                table = heatmaps(Path(table), work)
            nt = windowed_table(table, work, labels=True, progress=progress)
            cache = run_cache(lm, nt, work, progress)
            maker = maker_for(cfg, cache, lm.device)
            source, dropped = given, len(nt.dropped)
        tta = cfg.run.tta if tta is None else tta
        rows = select_rows(cache, split, run_dir, source)
        labels = cache.labels(rows)
        if not np.isin(labels, (0, 1)).all():
            raise RunError(f"{source}: {int((~np.isin(labels, (0, 1))).any(axis=1).sum())} breast(s) of split "
                           f"{split!r} have no 0/1 labels; evaluation needs labels (use `mvmammo predict` instead)")
        probs = predict_rows(model, maker, rows, tta=tta, batch_size=max(cfg.optim.batch_size, 32),
                             seed=cfg.run.seed, precision=cfg.run.precision)
        pred = predictions_table(cache, rows, probs, seed=cfg.run.seed, run_name=run_dir.name)
        result = {"split": split, "name": name, "table": str(source), "tta": tta, "checkpoint": checkpoint,
                  "breasts": int(len(rows)), "dropped_in_preprocessing": int(dropped),
                  **auc_report(breast_level(pred), n_boot)}
        write_csv_atomic(pred, run_dir / f"predictions_{name}.csv")
        _write_text_atomic(run_dir / f"metrics_{name}.json", json.dumps(result, indent=2) + "\n")
    return result


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def auc_report(breasts: pd.DataFrame, n_boot: int = 1000) -> dict:
    """Per label: AUC, DeLong 95% CI, patient-level bootstrap 95% CI."""
    out = {}
    groups = breasts["patient_id"].astype(str).to_numpy()
    for label in LABELS:
        y = breasts[label].to_numpy().astype(int)
        s = breasts[f"p_{label}"].to_numpy()
        out[label] = metrics.summarize_auc(y, s, groups, n_boot=n_boot)
    return out


def evaluated_names(run_dir: str | Path) -> list[str]:
    """The result names a run folder holds predictions for (test, val, external-..., ...)."""
    return sorted(p.name[len("predictions_"):-len(".csv")] for p in Path(run_dir).glob("predictions_*.csv"))


def load_predictions(run_dir: str | Path, split: str = "test") -> pd.DataFrame:
    """A run's predictions_<split>.csv; one-line RunError naming the run and what to run when absent."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run folder; give a folder written by `mvmammo train`")
    path = run_dir / f"predictions_{split}.csv"
    if not path.exists():
        have = evaluated_names(run_dir)
        ext = split.startswith("external-")
        todo = "mvmammo evaluate " + str(run_dir) + (" --table TABLE" if ext else f" --split {split}")
        raise RunError(f"{run_dir}: not evaluated on {split!r} (no {path.name}); run `{todo}` first"
                       + (f" (evaluated: {', '.join(have)})" if have else ""))
    try:
        return pd.read_csv(path, dtype={"breast_id": str, "patient_id": str})
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: unreadable predictions ({type(exc).__name__}); rerun `mvmammo evaluate "
                       f"{run_dir}`") from None


def paired_test(run_a: str | Path, run_b: str | Path, split: str = "test", label: str = "malignant"
                ) -> "metrics.PairedTest":
    """Paired DeLong test of two runs' breast-level predictions on the same breasts."""
    a = breast_level(load_predictions(run_a, split)).set_index("breast_id")
    b = breast_level(load_predictions(run_b, split)).set_index("breast_id")
    common = a.index.intersection(b.index)
    if len(common) != len(a) or len(common) != len(b):
        raise RunError(f"{run_a} and {run_b} were evaluated on different breasts for {split!r}; a paired test needs "
                       "the same breasts (evaluate both on the same table and split)")
    y = a.loc[common, label].to_numpy().astype(int)
    return metrics.delong_paired_test(y, a.loc[common, f"p_{label}"].to_numpy(), b.loc[common, f"p_{label}"].to_numpy())
