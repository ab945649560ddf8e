"""Preprocess a whole exam table: every breast's views (+ heatmaps) -> window PNGs, a table and a report.

Per breast the report (``preprocess_report.csv``) holds its status (kept / dropped + reason) and per view:
the background threshold and how it was chosen, the breast's share of the image and of the window, the
share of the breast left outside the window, the chest-wall side in the source image (L/R), whether the
view was flipped, the pixel spacing (mm, and where it came from), the resampling factor, and a warning
when the breast is cut by the window or fills less than a fifth of it.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mvmammo.data.preprocess import (PreprocessError, Settings, apply, breast_in_window, match_shape,
                                     plan)

VIEWS = ("cc", "mlo")
SPACING_COLUMNS = ("pixel_spacing", "cc_pixel_spacing", "mlo_pixel_spacing")
CUT_WARN = 0.02    # share of the breast outside the window above which the view is flagged "cut"
FILL_WARN = 0.2    # breast share of the window below which the view is flagged "small"


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in str(text))


def _write_png(write, path: Path, arr: np.ndarray) -> None:
    """Atomic: a temporary PNG in the same folder, then os.replace."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    try:
        write(tmp, arr)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _view(task: dict, view: str, window: tuple, values: dict, report: dict) -> None:
    """Window one view (+ its heatmaps) into task's out_dir; fills the table ``values`` and ``report``."""
    from mvmammo.data.images import read_heatmap, read_image, write_heatmap_png, write_png16
    from mvmammo.data.spacing import resample, scale_factors, source_spacing

    s: Settings = task["settings"]
    out_dir, stem, path = Path(task["out_dir"]), task["stem"], task["paths"][f"{view}_path"]
    task["current"] = path
    img = read_image(path, voi_lut=s.voi_lut)
    spacing, origin = source_spacing(path, task.get("spacing", {}), view, s.source_spacing)
    zoom = (1.0, 1.0)
    if s.spacing is not None:
        if spacing is None:
            raise PreprocessError(f"{path}: no pixel spacing (no DICOM PixelSpacing/ImagerPixelSpacing, no "
                                  f"{view}_pixel_spacing or pixel_spacing column) and --spacing {s.spacing:g} asks "
                                  "to resample; add the column or give --source-spacing MM")
        zoom = scale_factors(spacing, s.spacing)
        img = resample(img, zoom)
    geo = plan(img, view, window, s.margin, s.crop_margin, s.background, s.min_breast_area)
    rel = f"images/{stem}_{view}.png"
    _write_png(write_png16, out_dir / rel, apply(img, geo))
    values.update({f"{view}_path": rel, f"{view}_window_margin": s.margin,
                   f"{view}_crop_box": " ".join(map(str, geo.crop_box)),
                   f"{view}_center": " ".join(map(str, geo.center)), f"{view}_flipped": int(geo.flipped)})
    if s.spacing is not None:
        values[f"{view}_pixel_spacing_mm"] = s.spacing
    for kind in ("benign", "malignant"):
        col = f"{view}_heatmap_{kind}"
        if task["paths"].get(col):
            task["current"] = task["paths"][col]
            hm = match_shape(read_heatmap(task["current"]), img.shape)  # also follows the resampling
            hrel = f"heatmaps/{stem}_{view}_{kind}.png"
            _write_png(write_heatmap_png, out_dir / hrel, apply(hm, geo))
            values[col] = hrel
    share_window, outside = breast_in_window(geo)
    warn = []
    if outside > CUT_WARN:
        warn.append(f"{view}: breast cut by the window ({outside:.1%} of it outside)")
    if share_window < FILL_WARN:
        warn.append(f"{view}: breast fills {share_window:.1%} of the window (< {FILL_WARN:.0%})")
    bm = geo.breast
    report.update({f"{view}_threshold": bm.threshold, f"{view}_threshold_method": bm.method,
                   f"{view}_breast_share_image": round(float(geo.keep.mean()), 4),
                   f"{view}_breast_share_window": round(share_window, 4),
                   f"{view}_breast_outside_window": round(outside, 4),
                   f"{view}_chest_wall": bm.chest_wall, f"{view}_flipped": int(geo.flipped),
                   f"{view}_spacing_mm": " ".join(f"{v:g}" for v in spacing) if spacing else "",
                   f"{view}_spacing_source": origin, f"{view}_scale": round(zoom[1], 6),
                   f"{view}_warning": "; ".join(warn)})


def process_breast(task: dict) -> dict:
    """One breast: its views (+ heatmaps) -> window PNGs. Never raises: a failure names file and reason."""
    s: Settings = task["settings"]
    values, report, warnings = {}, {}, []
    task["current"] = None
    try:
        for view, window in zip(VIEWS, (s.window_cc, s.window_mlo)):
            if not task["paths"].get(f"{view}_path"):
                if not s.allow_missing_view:
                    raise PreprocessError(f"no {view.upper()} image; give --allow-missing-view to window "
                                          "one-view breasts")
                warnings.append(f"{view}: no image (one-view breast)")
                continue
            _view(task, view, window, values, report)
            if report.get(f"{view}_warning"):
                warnings.append(report[f"{view}_warning"])
    except Exception as exc:  # any failure drops this breast, reported; the others go on
        current = task["current"]
        msg = str(exc) if current is None or str(current) in str(exc) else f"{current}: {exc}"
        return {"index": task["index"], "ok": False, "file": "" if current is None else str(current),
                "reason": f"{type(exc).__name__}: {msg}"}
    return {"index": task["index"], "ok": True, "values": values, "report": report, "warning": "; ".join(warnings)}


def _load(table, allow_missing_view: bool):
    """The table, validated for preprocessing: labels and split optional (a table to predict on)."""
    import inspect

    from mvmammo.data import exams

    wanted = {"allow_missing_view": allow_missing_view, "require_labels": False, "require_split": False}
    known = inspect.signature(exams.load_valid).parameters
    return exams.load_valid(table, check_files=False, **{k: v for k, v in wanted.items() if k in known}), known


def preprocess_table(table, out_dir, settings: Settings = Settings(), workers: int = 1, progress: bool = True):
    """Window every breast of an exam table into ``out_dir``; returns (table of kept breasts, report frame).

    Writes out_dir/images/*.png, out_dir/heatmaps/*.png, out_dir/exams.csv, out_dir/preprocess_report.csv.
    """
    import sys
    from multiprocessing import get_context

    import pandas as pd
    from tqdm import tqdm

    from mvmammo.data import exams

    df, known = _load(table, settings.allow_missing_view)
    out_dir = Path(out_dir)
    try:
        (out_dir / "images").mkdir(parents=True, exist_ok=True)
        (out_dir / "heatmaps").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PreprocessError(f"{out_dir}: cannot create the output folder ({exc.strerror}); "
                              "give a writable --out") from None
    tasks = []
    for i, row in df.iterrows():
        paths = {c: str(exams.resolve_path(df, row[c])) for c in exams.PATH_COLUMNS
                 if c in df.columns and pd.notna(row[c]) and str(row[c]).strip()}
        spacing = {c: row[c] for c in SPACING_COLUMNS if c in df.columns}
        tasks.append({"index": i, "paths": paths, "spacing": spacing, "out_dir": str(out_dir), "settings": settings,
                      "stem": f"{i:06d}_{_safe_name(row['breast_id'])}"})
    results = []
    bar = tqdm(total=len(tasks), desc="preprocess", unit="breast", disable=not progress, file=sys.stderr)
    if workers > 1 and len(tasks) > 1:
        with get_context().Pool(min(workers, len(tasks))) as pool:
            for r in pool.imap_unordered(process_breast, tasks):
                results.append(r)
                bar.update(1)
    else:
        for t in tasks:
            results.append(process_breast(t))
            bar.update(1)
    bar.close()
    results.sort(key=lambda r: r["index"])
    report = pd.DataFrame([{"breast_id": df.loc[r["index"], "breast_id"], "status": "kept" if r["ok"] else "dropped",
                            "file": r.get("file", ""), "reason": r.get("reason", ""), "warning": r.get("warning", ""),
                            **r.get("report", {})} for r in results])
    exams.write_table(report, out_dir / "preprocess_report.csv")
    kept = [r for r in results if r["ok"]]
    out = df.loc[[r["index"] for r in kept]].copy()
    for r in kept:
        for k, v in r["values"].items():
            if k not in out.columns:
                out[k] = None
            out.at[r["index"], k] = v
    if len(out):
        out.attrs["root"] = str(out_dir.resolve())
        relax = {"allow_missing_view": settings.allow_missing_view, "require_labels": False, "require_split": False}
        problems = exams.validate(out, check_files=True, **{k: v for k, v in relax.items() if k in known})
        if problems:
            raise PreprocessError("preprocessed table is not valid: " + "; ".join(problems[:5]))
        exams.write_table(out.reset_index(drop=True), out_dir / "exams.csv")
    return out.reset_index(drop=True), report
