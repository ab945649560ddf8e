"""Apply trained runs to a new exam table: windows for the table, each run's predictions, their ensemble.

The steps, shared by `mvmammo predict` and `mvmammo evaluate --table`:
1. load the table without asking for labels or splits (predict) and with one-view breasts allowed;
2. a table of raw images (no ``*_window_margin`` columns) is preprocessed into ``WORK/preprocessed`` with the
   same code and defaults as `mvmammo preprocess`; breasts it drops are kept in the output with the reason;
3. per run, a window cache of the new table under ``WORK`` with the run's own window sizes, margins and
   channels, built by the training code (``build_cache``): runs that agree on them share one cache;
4. per run, TTA predictions (the run's run.tta unless given) with one-view breasts read by the family's
   single-view path (see :func:`mvmammo.evaluation.predict.combine`); the ensemble is the mean probability
   over the runs that can read the breast.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from mvmammo import LABELS, VIEWS
from mvmammo.data import exams
from mvmammo.errors import MvError
from mvmammo.evaluation.loading import LoadedModel
from mvmammo.evaluation.predict import predict_outputs

MARGIN_COLUMNS = ("cc_window_margin", "mlo_window_margin")


class HeatmapsNeeded(MvError):
    """A run reads heatmap channels and the table has none."""


@dataclass
class NewTable:
    """A table ready for caching: ``path`` (windowed) and every breast the user gave (``frame``)."""
    path: Path
    frame: pd.DataFrame
    dropped: dict = field(default_factory=dict)   # breast_id -> reason (preprocessing failed)
    warnings: dict = field(default_factory=dict)  # breast_id -> [warning, ...]


def load_table(path: str | Path, labels: bool) -> pd.DataFrame:
    """The table with one-view breasts allowed; labels (0/1, else -1) and split ("all") optional unless asked."""
    return exams.load_valid(path, check_files=False, allow_missing_view=True, require_labels=labels,
                            require_split=False)


def view_presence(df: pd.DataFrame) -> np.ndarray:
    """bool (N, 2) [cc, mlo]: the breast has a path for the view."""
    if hasattr(exams, "view_present"):
        return np.asarray(exams.view_present(df), dtype=bool)
    cols = [df[f"{v}_path"] if f"{v}_path" in df.columns else pd.Series([None] * len(df)) for v in VIEWS]
    return np.stack([c.notna().to_numpy() & (c.astype(str).str.strip() != "").to_numpy() for c in cols], axis=1)


def has_heatmaps(df: pd.DataFrame) -> bool:
    return all(c in df.columns and df[c].notna().any() for c in exams.HEATMAP_COLUMNS)


def windowed_table(table: str | Path, work: str | Path, labels: bool = False, workers: int = 1,
                   progress: bool = True, settings=None) -> NewTable:
    """The table as windows: as given when already preprocessed, else preprocessed into ``work/preprocessed``."""
    from mvmammo.data.preprocess import Settings
    from mvmammo.data.preprocess_table import preprocess_table

    table = Path(table)
    df = load_table(table, labels)
    if any(c in df.columns and df[c].notna().any() for c in MARGIN_COLUMNS):  # written by `mvmammo preprocess`
        return NewTable(table, df)
    out_dir = Path(work) / "preprocessed"
    settings = settings or Settings()  # the `mvmammo preprocess` defaults
    if "allow_missing_view" in {f.name for f in dataclasses.fields(Settings)}:
        settings = dataclasses.replace(settings, allow_missing_view=True)
    kept, report = preprocess_table(table, out_dir, settings, workers, progress)
    dropped, warnings = {}, {}
    for _, r in report.iterrows():
        bid = str(r["breast_id"])
        if r.get("status") == "dropped":
            dropped[bid] = f"not preprocessed: {r.get('reason', '')}"
        text = r.get("warning", "")
        if isinstance(text, str) and text.strip():
            warnings.setdefault(bid, []).append(f"preprocess: {text.strip()}")
    if len(kept) == 0:
        first = next(iter(dropped.values()), "no rows")
        raise MvError(f"{table}: no breast could be preprocessed ({first}); see {out_dir}/preprocess_report.csv")
    return NewTable(out_dir / "exams.csv", df, dropped, warnings)


def run_cache(lm: LoadedModel, nt: NewTable, work: str | Path, progress: bool = True):
    """The run's window cache for the new table, under ``work/windows/``: the run's data config (window sizes,
    margins, aspect) applied to the new table's rows, one-view breasts kept.

    Built with build_cache from the table as :func:`load_table` read it, not through prepare_cache, whose
    loader is the training contract (labels and splits required); runs with the same geometry share it.
    """
    import hashlib
    import inspect
    import json

    from mvmammo.data.cache import build_cache

    heat = lm.in_channels == 3
    if heat and not has_heatmaps(nt.frame):
        raise HeatmapsNeeded(f"{lm.run_dir}: this run reads heatmap channels (trained with data.heatmaps=true, 3 "
                             f"input channels) but {nt.path} has no {'/'.join(exams.HEATMAP_COLUMNS)} columns; give "
                             "--patch-model PATCH_RUN to make them on the way (or run `mvmammo heatmaps` first), "
                             "or use a run trained with data.heatmaps=false")
    d = lm.cfg.data
    keep_aspect = getattr(d, "keep_aspect", True)
    extra = {"keep_aspect": keep_aspect} if "keep_aspect" in inspect.signature(build_cache).parameters else {}
    what = json.dumps([str(Path(nt.path).resolve()), list(d.size_cc), list(d.size_mlo), heat, d.aug_noise_px,
                       d.full_height, keep_aspect])
    tag = f"{Path(nt.path).parent.name}-{d.size_cc[0]}x{d.size_cc[1]}-{d.size_mlo[0]}x{d.size_mlo[1]}-c" \
          f"{3 if heat else 1}-{hashlib.sha1(what.encode()).hexdigest()[:8]}"
    df = load_table(nt.path, labels=False)
    return build_cache(df, Path(work) / "windows" / tag, tuple(d.size_cc), tuple(d.size_mlo), heat, d.aug_noise_px,
                       d.full_height, progress, **extra)


def family_of(model) -> str:
    core = getattr(model, "_orig_mod", model)
    return str(getattr(getattr(core, "cfg", None), "family", type(core).__name__)).lower()


def per_view_kind(model) -> str:
    """'logit' for sum fusion (Joint/Shared: per-view logits add up to the fused one), else 'p' (probabilities)."""
    return "logit" if family_of(model) in ("joint", "shared") else "p"


def run_predictions(lm: LoadedModel, cache, tta: int | None = None, progress: bool = True) -> pd.DataFrame:
    """One row per cached breast (index breast_id): p_<label>, per-view contributions; NaN where unreadable."""
    from mvmammo.training.inputs import maker_for

    cfg = lm.cfg
    tta = cfg.run.tta if tta is None else tta
    maker = maker_for(cfg, cache, lm.device)
    rows = np.arange(len(cache))
    out = predict_outputs(lm.model, maker, rows, tta=tta, batch_size=max(cfg.optim.batch_size, 32),
                          seed=cfg.run.seed, precision=cfg.run.precision, progress=progress)
    frame = pd.DataFrame(index=pd.Index(cache.index["breast_id"].astype(str), name="breast_id"))
    p = out["p"].mean(axis=0)  # (N, 2): the TTA mean of the probabilities
    kind = per_view_kind(lm.model)
    for j, label in enumerate(LABELS):
        frame[f"p_{label}"] = p[:, j]
    for v in VIEWS:
        z = out[f"logits_{v}"]  # (n_windows, N, 2)
        val = z.mean(axis=0) if kind == "logit" else (1.0 / (1.0 + np.exp(-z))).mean(axis=0)
        for j, label in enumerate(LABELS):
            frame[f"{kind}_{v}_{label}"] = val[:, j]
    return frame


def ensemble_frames(frames: list[pd.DataFrame]) -> tuple[pd.DataFrame, pd.Series]:
    """Mean over runs of every column, each over the runs that give it a value; and the number of runs per breast."""
    ids = pd.Index(sorted(set().union(*[f.index for f in frames])), name="breast_id")
    cols = list(dict.fromkeys(c for f in frames for c in f.columns))
    stack = {c: np.stack([f[c].reindex(ids).to_numpy(dtype=float) if c in f.columns
                          else np.full(len(ids), np.nan) for f in frames]) for c in cols}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a breast no run can read: NaN, not a warning
        mean = {c: np.nanmean(s, axis=0) for c, s in stack.items()}
    n_runs = (~np.isnan(stack["p_malignant"])).sum(axis=0)
    return pd.DataFrame(mean, index=ids), pd.Series(n_runs, index=ids, name="n_runs")


def views_text(present: np.ndarray) -> list[str]:
    return ["cc+mlo" if a and b else "cc" if a else "mlo" if b else "" for a, b in present]


def write_csv_atomic(df: pd.DataFrame, path: str | Path) -> None:
    """CSV via a temp file in the same folder and os.replace: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        df.to_csv(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def predict_table(runs: list[str | Path], table: str | Path, out: str | Path, work: str | Path | None = None,
                  tta: int | None = None, checkpoint: str = "best", device: str | None = None, workers: int = 1,
                  progress: bool = True, notes: dict | None = None, settings=None,
                  heatmaps: Callable[[Path, Path], Path] | None = None) -> pd.DataFrame:
    """Predictions of the ensemble of ``runs`` for every breast of ``table``, written atomically to ``out``.

    notes: breast_id -> [warning, ...] from the caller (e.g. the DICOM walk), added to the warning column.
    settings: preprocessing Settings for a raw table (default: those of `mvmammo preprocess`).
    heatmaps: for runs that read heatmap channels when the table has none: a function of (table, work folder)
    that returns a copy of the table with heatmap columns, called before preprocessing (the predict command hands in
    :func:`mvmammo.heatmaps.table.heatmaps_in_work`; evaluation does not import the heatmap stage).
    """
    from mvmammo.evaluation.loading import load_model

    out = Path(out)
    work = Path(work) if work else out.parent / f"{out.stem}_work"
    models = [load_model(r, checkpoint, device) for r in runs]  # every run's problems before any heavy work
    if heatmaps is not None and any(lm.in_channels == 3 for lm in models) \
            and not has_heatmaps(load_table(Path(table), False)):
        table = heatmaps(Path(table), work)
    nt = windowed_table(table, work, labels=False, workers=workers, progress=progress, settings=settings)
    for lm in models:
        if lm.in_channels == 3 and not has_heatmaps(nt.frame):
            run_cache(lm, nt, work, progress)  # raises HeatmapsNeeded (one line)
    frames = []
    for lm in models:
        cache = run_cache(lm, nt, work, progress)
        frames.append(run_predictions(lm, cache, tta, progress))
    mean, n_runs = ensemble_frames(frames)
    df = nt.frame
    ids = df["breast_id"].astype(str)
    present = view_presence(df)
    res = pd.DataFrame({"patient_id": df["patient_id"].astype(str), "exam_id": df["exam_id"].astype(str),
                        "side": df["side"], "breast_id": ids})
    for c in ("p_benign", "p_malignant"):
        res[c] = mean[c].reindex(ids).to_numpy()
    res["views"] = views_text(present)
    for c in mean.columns:
        if c not in res.columns:
            res[c] = mean[c].reindex(ids).to_numpy()
    res["n_runs"] = n_runs.reindex(ids).fillna(0).astype(int).to_numpy()
    res["warning"] = _warnings(models, frames, nt, ids, present, notes or {})
    write_csv_atomic(res, out)
    return res


def _warnings(models, frames, nt: NewTable, ids: pd.Series, present: np.ndarray, notes: dict) -> list[str]:
    """One text per breast: '; '-joined warnings (empty when none)."""
    out = []
    for k, bid in enumerate(ids):
        w = list(notes.get(bid, []))
        if bid in nt.dropped:
            w.append(nt.dropped[bid])
        w += nt.warnings.get(bid, [])
        if present[k].sum() == 1:
            have, miss = ("CC", "MLO") if present[k][0] else ("MLO", "CC")
            w.append(f"one view ({have} only): {miss} masked (Joint/Shared), {have} model alone (Split)")
        for lm, f in zip(models, frames):
            if bid in nt.dropped:
                continue
            if bid not in f.index:
                w.append(f"run {lm.run_dir.name}: breast not in its window cache")
            elif np.isnan(f.at[bid, "p_malignant"]):
                w.append(f"run {lm.run_dir.name} ({family_of(lm.model)}) cannot read this breast's views")
        out.append("; ".join(w))
    return out
