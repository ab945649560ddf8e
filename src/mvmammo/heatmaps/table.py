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

Speed: images are read and prepared, and their maps rendered and written, on host threads while the device runs
the network on the previous image (:mod:`mvmammo.heatmaps.pipeline`; ``--workers``).

Resumable: an image whose three files exist is skipped; files are written to a temp name and renamed, so an
interrupted run leaves no half-written map. The table is written last (atomically).
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mvmammo.atomic import replace_atomic, write_text
from mvmammo.data import exams, images
from mvmammo.errors import MvError
from mvmammo.heatmaps.infer import MODES, Grid, infer_grid, load_patch_model, render
from mvmammo.patches.image import Prepared, prepare

VIEWS = ("cc", "mlo")


def _key(row: pd.Series) -> str:
    raw = f"{row['patient_id']}_{row['exam_id']}_{row['side']}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", raw)


def _save_png(path: Path, arr: np.ndarray) -> None:
    replace_atomic(path, lambda f: images.write_heatmap_png(f, arr))


def _save_grid(path: Path, res) -> None:
    replace_atomic(path, lambda f: np.savez_compressed(
        f, probs=res.probs.astype(np.float16), rows=res.rows, cols=res.cols, box=np.asarray(res.box, np.int64),
        mode=np.asarray(res.mode)))


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


def default_workers() -> int:
    """Host threads for the load and write stages: the cores this process may use, at most 16."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:   # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(16, cores))


@dataclass(frozen=True)
class Job:
    """One image to do: row k of the table, its view, the source image and the three files to write."""
    k: int
    view: str
    image: Path
    benign: Path
    malignant: Path
    grid: Path


def stages(model, patch: int, stride: int, batch_size: int, device, mode: str, crop_margin: int = 20):
    """(load, infer, write) for :func:`mvmammo.heatmaps.pipeline.run`: read + prepare on the host, the patch grid
    on the device, render + the three files on the host (each file atomic, the grid last: it marks done)."""
    def load(job: Job) -> Prepared:
        return prepare(images.read_image(job.image), patch, crop_margin)

    def infer(job: Job, prep: Prepared) -> Grid:
        return infer_grid(model, prep, patch, stride, batch_size, device, mode=mode)

    def write(job: Job, g: Grid) -> Grid:
        res = render(g, patch)
        _save_png(job.benign, res.benign)
        _save_png(job.malignant, res.malignant)
        _save_grid(job.grid, res)   # last: its presence marks the image done
        return g

    return load, infer, write


def make_heatmaps(table: str | Path, patch_model: str | Path, out: str | Path, stride: int = 70,
                  batch_size: int = 256, device: str | None = None, overwrite: bool = False,
                  progress: bool = True, limit: int | None = None, mode: str = "patches",
                  workers: int | None = None) -> dict:
    """Heatmaps for every present view of every row; returns a summary (and writes OUT/<table name>).

    ``workers`` host threads read, prepare and write while the device runs the network (default: the usable
    cores, at most 16; 0 runs every stage on this thread, one image at a time)."""
    import torch
    from tqdm.auto import tqdm

    from mvmammo.heatmaps import pipeline
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
    workers = default_workers() if workers is None else workers
    if workers < 0:
        raise MvError(f"--workers {workers}: must be >= 0 (0: no host threads)")
    rows = df if limit is None else df.iloc[:limit]
    with hold_run(out, "heatmaps"):
        _settings(out, info, patch, stride, overwrite, mode)
        maps = out / "maps"
        maps.mkdir(exist_ok=True)
        new = {c: [None] * len(df) for c in exams.HEATMAP_COLUMNS}
        todo, skipped = [], 0
        for k, (_, row) in enumerate(rows.iterrows()):
            for view in VIEWS:
                if exams.is_empty(pd.Series([row[f"{view}_path"]])).iloc[0]:
                    continue
                stem = maps / f"{_key(row)}_{view}"
                job = Job(k, view, exams.resolve_path(df, row[f"{view}_path"]),
                          *(stem.with_name(stem.name + s) for s in ("_benign.png", "_malignant.png", "_grid.npz")))
                for lab in ("benign", "malignant"):
                    new[f"{view}_heatmap_{lab}"][k] = os.path.relpath(getattr(job, lab), out)
                if overwrite or not all(f.exists() for f in (job.grid, job.benign, job.malignant)):
                    todo.append(job)
                else:
                    skipped += 1
        t0 = time.time()
        bar = tqdm(total=len(todo), desc="heatmaps", unit="image", disable=not progress)
        count = {"patches": 0, "computed": 0}

        def on_done(job: Job, g: Grid) -> None:
            count["patches"] += int(g.probs.shape[0] * g.probs.shape[1])
            count["computed"] += g.computed if mode == "patches" else 0
            bar.update(1)

        try:
            done = pipeline.run(todo, *stages(model, patch, stride, batch_size, device, mode), workers=workers,
                                on_done=on_done)
        finally:
            bar.close()
        secs = time.time() - t0
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
    return {"table": str(dest), "images": done, "skipped": skipped, "patches": count["patches"],
            "computed": count["computed"], "seconds": secs, "device": str(device), "mode": mode,
            "workers": workers}


def heatmaps_in_work(table: str | Path, work: str | Path, patch_model: str | Path, mode: str = "patches",
                     stride: int = 70, device: str | None = None, progress: bool = True) -> Path:
    """The table with heatmap columns, made into ``work/heatmaps-<key>`` (key: the patch classifier, mode and
    stride, so maps of another classifier never mix with these and a rerun resumes); for `mvmammo predict
    --patch-model`, which hands it to the evaluation as a function of the table."""
    import hashlib
    import sys

    key = f"{Path(patch_model).resolve()}|{mode}|{stride}"
    dest = Path(work) / f"heatmaps-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    s = make_heatmaps(table, patch_model, dest, stride=stride, device=device, progress=progress, mode=mode)
    if progress:
        print(f"heatmaps ({mode}, stride {stride}) from {patch_model}: {s['images']} images made, {s['skipped']} "
              f"already there, in {dest}", file=sys.stderr)
    return Path(s["table"])
