"""A patch set on disk: built from an exam table + annotations, read back as arrays per split.

Layout of OUT:
  shards/<split>-<k>.npy   float16 (n, P, P) standardised patches, at most ``SHARD`` per file
  index.csv                one row per patch: split, shard, offset, label, cls, patient_id, exam_id, side,
                           view, y, x (top-left in source px)
  patches.json             settings and the class counts per split; written last (marks the set complete)
Splits follow the exam table's ``split`` column (by patient, as the table's). Every file is written to a temp
name and renamed; a rerun with a complete patches.json and the same settings does nothing.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from mvmammo.data import exams, images
from mvmammo.errors import MvError
from mvmammo.patches.annotations import lesion_masks, read_annotations
from mvmammo.patches.extract import PatchConfig, class_counts, image_patches
from mvmammo.patches.runs import CLASSES

SHARD = 2048


def _save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)


class _Writer:
    def __init__(self, root: Path):
        self.root = root
        self.buf: dict[str, list] = {}
        self.count: dict[str, int] = {}
        self.shard: dict[str, int] = {}
        self.rows: list[dict] = []

    def add(self, split: str, patches: np.ndarray, meta: list[dict]) -> None:
        for arr, m in zip(patches, meta):
            b = self.buf.setdefault(split, [])
            k = self.shard.setdefault(split, 0)
            self.rows.append({"split": split, "shard": f"{split}-{k:05d}.npy", "offset": len(b), **m})
            b.append(arr)
            if len(b) == SHARD:
                self.flush(split)

    def flush(self, split: str) -> None:
        b = self.buf.get(split)
        if b:
            _save_npy(self.root / f"{split}-{self.shard[split]:05d}.npy", np.stack(b))
            self.buf[split] = []
            self.shard[split] += 1


def default_annotations(table: Path) -> Path:
    """The annotation table an importer wrote beside the exam table, else a synthetic cohort's lesions.csv."""
    from mvmammo.data.annotations import annotation_path

    written = annotation_path(table)
    return written if written.exists() else table.parent / "lesions.csv"


def extract_patches(table: str | Path, out: str | Path, annotations: str | Path | None = None,
                    layout: str = "auto", cfg: PatchConfig = PatchConfig(), seed: int = 0,
                    mask_root: str | Path | None = None, progress: bool = True) -> dict:
    """Cut the patch set of every image of ``table``; returns {"counts": {split: {cls: n}}, ...}."""
    from tqdm.auto import tqdm

    table, out = Path(table), Path(out)
    df = exams.load_valid(table, allow_missing_view=True)
    done = [c for c in ("cc_crop_box", "mlo_crop_box") if c in df.columns]
    if done:
        # Outlines are drawn in the source images' pixels; a preprocessed image is resampled, cropped and
        # flipped, so boxes and disks would land in the wrong place (masks would fail on their size).
        raise MvError(f"{table}: a preprocessed table (column {done[0]}): lesion outlines are in the source "
                      "images' pixels; run `mvmammo patches extract` on the table `mvmammo preprocess` read")
    ann_path = Path(annotations) if annotations else default_annotations(table)
    ann = read_annotations(ann_path, layout, mask_root)
    settings = {"table": str(table.resolve()), "annotations": str(ann_path.resolve()), "seed": int(seed),
                "config": dataclasses.asdict(cfg), "classes": list(CLASSES)}
    meta_path = out / "patches.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("settings") == settings:
            return {**old, "cached": True}
        meta_path.unlink()
    shards = out / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    for f in shards.glob("*.npy"):
        f.unlink()
    ann = ann.assign(side=ann["side"].astype(str).str.upper().str[0], view=ann["view"].astype(str).str.lower())
    groups = {k: g for k, g in ann.groupby(["patient_id", "exam_id", "side", "view"], sort=False)}
    used: set = set()
    writer = _Writer(shards)
    rng = np.random.default_rng(seed)
    for _, row in tqdm(df.iterrows(), total=len(df), desc="patches", unit="breast", disable=not progress):
        biopsied = int(row["benign"]) == 1 or int(row["malignant"]) == 1
        for view in ("cc", "mlo"):
            if exams.is_empty(pd.Series([row[f"{view}_path"]])).iloc[0]:
                continue
            img = images.read_image(exams.resolve_path(df, row[f"{view}_path"]))
            key = (str(row["patient_id"]), str(row["exam_id"]), str(row["side"]), view)
            g = groups.get(key)
            used.add(key)
            lesions = lesion_masks(g, img.shape, ann.attrs.get("root")) if g is not None else []
            patches, labels, where = image_patches(img, lesions, biopsied, cfg, rng)
            meta = [{"label": int(lab), "cls": CLASSES[lab], "patient_id": key[0], "exam_id": key[1],
                     "side": key[2], "view": view, "y": int(y), "x": int(x)} for lab, (y, x) in zip(labels, where)]
            writer.add(str(row["split"]), patches, meta)
    for split in list(writer.buf):
        writer.flush(split)
    index = pd.DataFrame(writer.rows, columns=["split", "shard", "offset", "label", "cls", "patient_id", "exam_id",
                                               "side", "view", "y", "x"])
    exams.write_table(index, out / "index.csv")
    counts = {s: class_counts(g["label"].to_numpy()) for s, g in index.groupby("split")}
    # Annotations whose (patient_id, exam_id, side, view) names no image of the table: reported, not cut.
    unmatched = int(sum(len(g) for k, g in groups.items() if k not in used))
    result = {"settings": settings, "counts": counts, "patches": int(len(index)), "unmatched_annotations": unmatched}
    tmp = meta_path.with_name(".patches.json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, meta_path)
    return {**result, "cached": False}


def load_split(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(patches float16 (N, P, P), labels int64 (N,)) of one split, in index order."""
    root = Path(root)
    if not (root / "patches.json").exists():
        raise MvError(f"{root}: not a complete patch set (no patches.json); run mvmammo patches extract first")
    index = pd.read_csv(root / "index.csv")
    sel = index[index["split"] == split]
    if sel.empty:
        return np.zeros((0, 0, 0), np.float16), np.zeros(0, np.int64)
    arrays = {name: np.load(root / "shards" / name, mmap_mode="r") for name in sel["shard"].unique()}
    patches = np.stack([arrays[s][o] for s, o in zip(sel["shard"], sel["offset"])])
    return patches, sel["label"].to_numpy(np.int64)
