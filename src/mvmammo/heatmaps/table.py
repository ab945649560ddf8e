"""`mvmammo heatmaps`: heatmaps for every image of an exam table, and the exam table that names them.

Output folder:
  heatmaps.json   settings (patch model checkpoint, patch, stride, mode); a rerun with other settings is refused
  maps/<key>_<view>_{benign,malignant}.png   16-bit PNG at the image's size, value = round(p x 65535)
  maps/<key>_<view>_grid.npz                 the patch grid: probs (ny, nx, 4) float16, rows, cols, box, mode
  exams.csv (or the input's name)            the input table with the four heatmap columns filled in, and a
                                             column ``heatmap_mode`` (patches | dense) naming how they were made

Modes: ``patches`` (default, NYU-exact: every grid patch through the classifier; constant patches computed once)
and ``dense`` (approximate: the classifier's features once over the whole crop; heatmaps/dense.py). The mode is
recorded in heatmaps.json, in every grid file and in the table's ``heatmap_mode`` column, so anything made from
dense heatmaps says so.

Storage choice: the maps are written at the image's size because every reader (cache, predict) takes a
heatmap of the image's shape; what keeps them small is that an averaged map is constant between patch
borders, so a PNG row mostly equals the row above (PNG's "up" filter makes it zeros) and a full-size map
compresses to tens of KB. The exact patch grid (ny x nx x 4 fp16, ~8 KB) is kept beside it, so the maps can be
re-rendered (e.g. at another resolution) without rerunning the classifier; it is also the resume marker.

Resumable: an image whose three files exist is skipped; files are written to a temp name and renamed, so an
interrupted run leaves no half-written map. The table is written last (atomically).
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mvmammo.atomic import write_text
from mvmammo.data import exams, images
from mvmammo.errors import MvError
from mvmammo.heatmaps.infer import MODES, image_heatmaps, load_patch_model

VIEWS = ("cc", "mlo")


def _key(row: pd.Series) -> str:
    raw = f"{row['patient_id']}_{row['exam_id']}_{row['side']}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", raw)


def _save_png(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    images.write_heatmap_png(tmp, arr)
    os.replace(tmp, path)


def _save_grid(path: Path, res) -> None:
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez_compressed(tmp, probs=res.probs.astype(np.float16), rows=res.rows, cols=res.cols,
                        box=np.asarray(res.box, np.int64), mode=np.asarray(res.mode))
    os.replace(tmp, path)


def _settings(out: Path, info: dict, patch: int, stride: int, overwrite: bool, mode: str) -> dict:
    settings = {"checkpoint": str(Path(info["checkpoint"]).resolve()), "arch": info["arch"], "patch": patch,
                "stride": stride, "mode": mode, "classes": ["malignant", "benign", "outside", "negative"],
                "format": "16-bit PNG at image size (p x 65535) + patch grid npz"}
    path = out / "heatmaps.json"
    if path.exists() and not overwrite:
        old = {"mode": "patches", **json.loads(path.read_text())}   # folders from before modes: patches
        diff = [k for k in ("checkpoint", "arch", "patch", "stride", "mode") if old.get(k) != settings[k]]
        if diff:
            raise MvError(f"{out}: holds heatmaps made with other settings ({', '.join(diff)} differ); use another "
                          "--out, or --overwrite to redo them")
    out.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(settings, indent=2) + "\n")
    return settings


def make_heatmaps(table: str | Path, patch_model: str | Path, out: str | Path, stride: int = 70,
                  batch_size: int = 256, device: str | None = None, overwrite: bool = False,
                  progress: bool = True, limit: int | None = None, mode: str = "patches") -> dict:
    """Heatmaps for every present view of every row; returns a summary (and writes OUT/<table name>)."""
    import torch
    from tqdm.auto import tqdm

    from mvmammo.runlock import hold_run

    table, out = Path(table), Path(out)
    df = exams.read_table(table)
    missing = [c for c in ("patient_id", "exam_id", "side", "cc_path", "mlo_path") if c not in df.columns]
    if missing:
        raise MvError(f"{table}: no column(s) {', '.join(missing)}; give an exam table (mvmammo validate TABLE)")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, info = load_patch_model(patch_model, device=device)
    patch = info["patch"]
    if stride < 1:
        raise MvError(f"--stride {stride}: must be >= 1 px")
    if mode not in MODES:
        raise MvError(f"--mode {mode}: use one of {', '.join(MODES)}")
    rows = df if limit is None else df.iloc[:limit]
    with hold_run(out, "heatmaps"):
        _settings(out, info, patch, stride, overwrite, mode)
        maps = out / "maps"
        maps.mkdir(exist_ok=True)
        new = {c: [None] * len(df) for c in exams.HEATMAP_COLUMNS}
        done = skipped = patches = computed = 0
        t0 = time.time()
        todo = [(k, row, v) for k, (_, row) in enumerate(rows.iterrows()) for v in VIEWS
                if not exams.is_empty(pd.Series([row[f"{v}_path"]])).iloc[0]]
        bar = tqdm(todo, desc="heatmaps", unit="image", disable=not progress)
        for k, row, view in bar:
            stem = maps / f"{_key(row)}_{view}"
            files = {lab: stem.with_name(stem.name + f"_{lab}.png") for lab in ("benign", "malignant")}
            grid_file = stem.with_name(stem.name + "_grid.npz")
            if overwrite or not (grid_file.exists() and all(f.exists() for f in files.values())):
                img = images.read_image(exams.resolve_path(df, row[f"{view}_path"]))
                res = image_heatmaps(model, img, patch, stride, batch_size, device, mode=mode)
                _save_png(files["benign"], res.benign)
                _save_png(files["malignant"], res.malignant)
                _save_grid(grid_file, res)   # last: its presence marks the image done
                done += 1
                patches += res.patches
                computed += res.computed if mode == "patches" else 0
            else:
                skipped += 1
            for lab, f in files.items():
                new[f"{view}_heatmap_{lab}"][k] = os.path.relpath(f, out)
        bar.close()
        result = df.copy()
        for col in ("cc_path", "mlo_path"):  # keep the image paths valid from the new table's folder
            result[col] = [v if exams.is_empty(pd.Series([v])).iloc[0] else
                           os.path.relpath(exams.resolve_path(df, v).resolve(), out.resolve())
                           for v in df[col]]
        for c, vals in new.items():
            result[c] = vals
        result["heatmap_mode"] = mode
        dest = out / table.name
        exams.write_table(result, dest)
    secs = time.time() - t0
    return {"table": str(dest), "images": done, "skipped": skipped, "patches": patches, "computed": computed,
            "seconds": secs, "device": str(device), "mode": mode}
