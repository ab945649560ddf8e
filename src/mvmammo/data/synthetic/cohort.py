"""Generate a whole cohort: patients, splits, breasts in parallel, the exam table, lesions, oracle, cache key.

Output folder:
  exams.csv      the exam table (contract of :mod:`mvmammo.data.exams`) plus ground-truth columns
  lesions.csv    one row per lesion: 3-D position, per-view pixel position / radius / visibility
  oracle.json    best achievable AUCs from the visibility indicators (:mod:`.oracle`)
  cohort.json    the generating arguments (the cache key) and a summary; written last
  images/        <patient>_<side>_{cc,mlo}.png, 16-bit, 12-bit values, background 0
  heatmaps/      <patient>_<side>_<view>_{benign,malignant}.png, 16-bit, probability * 65535
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .breast import BreastTask, make_breast_rows
from .oracle import compute_oracle, write_oracle
from .presets import get_preset

# Bump when the generator's output changes, so cached cohorts are regenerated.
GENERATOR_VERSION = 2
FULL_SIZE_CC = (2677, 1942)
FULL_SIZE_MLO = (2974, 1748)


def assign_splits(n_patients: int, fractions, seed: int) -> list[str]:
    """Split label per patient index: a seeded permutation cut by the fractions (train, val, test)."""
    order = np.random.default_rng([seed, 0x5B17]).permutation(n_patients)
    n_train = int(round(fractions[0] * n_patients))
    n_val = int(round(fractions[1] * n_patients))
    out = [""] * n_patients
    for rank, p in enumerate(order):
        out[p] = "train" if rank < n_train else ("val" if rank < n_train + n_val else "test")
    return out


def make_tasks(out_dir, preset, breasts, size_cc, size_mlo, seed, heatmaps) -> list[BreastTask]:
    """Breast i belongs to patient i // 2 (left, then right breast of the patient's single exam)."""
    n_patients = (breasts + 1) // 2
    splits = assign_splits(n_patients, preset.split_fractions, seed)
    width = max(5, len(str(n_patients)))
    tasks = []
    for i in range(breasts):
        p = i // 2
        tasks.append(BreastTask(index=i, patient_id=f"P{p:0{width}d}", exam_id=f"E{p:0{width}d}",
                                side="L" if i % 2 == 0 else "R", split=splits[p], seed=seed, preset=preset,
                                size_cc=tuple(size_cc), size_mlo=tuple(size_mlo), heatmaps=heatmaps,
                                out_dir=str(out_dir)))
    return tasks


def _cache_key(preset, breasts, size_cc, size_mlo, seed, heatmaps) -> dict:
    key = {"generator_version": GENERATOR_VERSION, "preset": preset.name, "breasts": int(breasts),
           "size_cc": [int(s) for s in size_cc], "size_mlo": [int(s) for s in size_mlo], "seed": int(seed),
           "heatmaps": bool(heatmaps), "knobs": dataclasses.asdict(preset)}
    return json.loads(json.dumps(key))  # as it reads back from cohort.json (tuples become lists)


def _check_size(size, name):
    if len(size) != 2 or min(size) < 32 or max(size) > 8192:
        raise ValueError(f"{name}={tuple(size)}: give (height, width), each between 32 and 8192 pixels "
                         f"(full size: CC {FULL_SIZE_CC}, MLO {FULL_SIZE_MLO})")


def generate_cohort(out_dir, preset="paper", breasts=600, size_cc=(128, 96), size_mlo=(128, 96), seed=0,
                    heatmaps=True, workers=None, progress=True) -> dict:
    """Write the synthetic cohort to ``out_dir``; return a summary dict (incl. ``oracle``).

    Cached: when ``out_dir/cohort.json`` holds the same arguments (and generator version) and exams.csv exists,
    nothing is generated and the stored summary is returned (with ``cached`` True). ``workers`` (default
    os.cpu_count()) and ``progress`` do not change the output.
    """
    pre = get_preset(preset) if isinstance(preset, str) else preset
    if breasts < 1:
        raise ValueError(f"breasts={breasts}: need at least 1")
    _check_size(size_cc, "size_cc")
    _check_size(size_mlo, "size_mlo")
    out = Path(out_dir)
    key = _cache_key(pre, breasts, size_cc, size_mlo, seed, heatmaps)
    meta_path = out / "cohort.json"
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError:
            meta = {}
        if meta.get("args") == key and (out / "exams.csv").exists():
            return {**meta["summary"], "cached": True}
        # Our own earlier cohort with other arguments: drop its files so no stale image survives.
        meta_path.unlink()
        for sub in ("images", "heatmaps"):
            shutil.rmtree(out / sub, ignore_errors=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
    if heatmaps:
        (out / "heatmaps").mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    tasks = make_tasks(out, pre, breasts, size_cc, size_mlo, seed, heatmaps)
    results = _run(tasks, workers, progress)
    rows = [r for r, _ in results]
    lesion_rows = [lr for _, lrs in results for lr in lrs]
    df = pd.DataFrame(rows)
    df.to_csv(out / "exams.csv", index=False)
    les_cols = ["breast_index", "patient_id", "exam_id", "side", "split", "lesion", "cls", "kind", "x", "y", "z",
                "radius", "contrast"] + [f"{v}_{k}" for v in ("cc", "mlo")
                                         for k in ("row", "col", "radius_px", "visible", "axis_dist")]
    pd.DataFrame(lesion_rows, columns=les_cols).to_csv(out / "lesions.csv", index=False)
    oracle = compute_oracle(df, "test")
    write_oracle(oracle, out)
    summary = {
        "out_dir": str(out), "table": str(out / "exams.csv"), "preset": pre.name, "breasts": int(breasts),
        "patients": int(df["patient_id"].nunique()),
        "by_split": {s: int((df["split"] == s).sum()) for s in ("train", "val", "test")},
        "prevalence": {"malignant": float(df["malignant"].mean()), "benign": float(df["benign"].mean())},
        "orientation": "chest wall at column 0 (left), nipple to the right, for L and R breasts alike",
        "oracle": oracle, "seconds": round(time.time() - t0, 2), "cached": False,
    }
    meta_path.write_text(json.dumps({"args": key, "summary": summary}, indent=2) + "\n")
    return summary


def _run(tasks: list[BreastTask], workers, progress: bool):
    """Make every breast, in order, with a pool of ``workers`` processes.

    Forked where the platform can (fast start, and callers need no ``if __name__ == "__main__"`` guard; the
    workers use numpy/scipy only, never torch), spawned elsewhere.
    """
    from tqdm.auto import tqdm

    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    workers = max(1, min(workers, len(tasks)))
    bar = tqdm(total=len(tasks), desc="synth", unit="breast", disable=not progress)
    try:
        if workers == 1:
            results = []
            for t in tasks:
                results.append(make_breast_rows(t))
                bar.update()
            return results
        chunk = max(1, min(16, len(tasks) // (workers * 8)))
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(workers) as pool:
            results = []
            for res in pool.imap(make_breast_rows, tasks, chunksize=chunk):
                results.append(res)
                bar.update()
            return results
    finally:
        bar.close()
