"""Lesion annotations for the patch stage: any layout read into the annotation table, rasterised per image.

The table's layout and the readers of each source's own files live in :mod:`mvmammo.data.annotations` (the
importers write the table); here: :func:`read_annotations` (a file in any layout, ``auto`` guessed from its
columns) and :func:`lesion_masks` (one image's outlines as boolean masks).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mvmammo.data.annotations import (KEYS, LESION_CLASSES, AnnotationError, _need, from_cbis,  # noqa: F401
                                      from_synthetic, from_vindr)

def read_annotations(path: str | Path, layout: str = "auto", root: str | Path | None = None) -> pd.DataFrame:
    """An annotation table from a file in any of the layouts (``auto`` guesses from the columns)."""
    path = Path(path)
    if not path.exists():
        raise AnnotationError(f"{path}: annotation file not found; give --annotations FILE, import with "
                              "`mvmammo import cbis|vindr` (it writes <table>_annotations.csv beside the table), "
                              "or keep a synthetic cohort's lesions.csv beside its exams.csv")
    if layout == "auto":
        cols = set(pd.read_csv(path, nrows=0).columns)
        cols_norm = {c.strip().replace(" ", "_").lower() for c in cols}
        layout = ("synthetic" if "cc_radius_px" in cols else "vindr" if "finding_birads" in cols
                  else "cbis" if "roi_mask_file_path" in cols_norm else "table")
    if layout == "synthetic":
        return from_synthetic(path)
    if layout == "cbis":
        return from_cbis(path, root)
    if layout == "vindr":
        return from_vindr(path)
    if layout != "table":
        raise AnnotationError(f"annotation layout {layout!r}: use auto, table, synthetic, cbis or vindr")
    df = pd.read_csv(path, dtype={"patient_id": str, "exam_id": str})
    _need(df, list(KEYS) + ["cls"], path)
    geoms = [{"mask_path"}, {"xmin", "ymin", "xmax", "ymax"}, {"row", "col", "radius_px"}]
    if not any(g <= set(df.columns) for g in geoms):
        raise AnnotationError(f"{path}: no geometry columns; give mask_path, or xmin/ymin/xmax/ymax, or "
                              "row/col/radius_px")
    bad = ~df["cls"].isin(LESION_CLASSES)
    if bad.any():
        k = int(np.flatnonzero(bad.to_numpy())[0])
        raise AnnotationError(f"{path}: row {k + 2}, column 'cls': {df['cls'].iloc[k]!r}; use malignant or benign")
    df["view"] = df["view"].astype(str).str.lower()
    df.attrs["root"] = str(path.parent.resolve())
    return df


def lesion_masks(ann: pd.DataFrame, shape: tuple, root: str | None = None) -> list[tuple[str, np.ndarray]]:
    """(cls, bool mask (H, W)) for every annotation row of one image."""
    from mvmammo.data.images import read_image

    h, w = shape
    out = []
    root = Path(root or ann.attrs.get("root", "."))
    for _, r in ann.iterrows():
        m = np.zeros((h, w), bool)
        if "mask_path" in r and isinstance(r["mask_path"], str) and r["mask_path"].strip():
            p = Path(r["mask_path"])
            m = read_image(p if p.is_absolute() else root / p) > 0
            if m.shape != (h, w):
                raise AnnotationError(f"{p}: ROI mask of shape {m.shape} for an image of shape {(h, w)}; give masks "
                                      "at the image's size")
        elif "xmin" in r and pd.notna(r.get("xmin")):
            x0, y0 = max(int(np.floor(r["xmin"])), 0), max(int(np.floor(r["ymin"])), 0)
            x1, y1 = min(int(np.ceil(r["xmax"])), w), min(int(np.ceil(r["ymax"])), h)
            m[y0:y1, x0:x1] = True
        else:
            yy, xx = np.ogrid[:h, :w]
            m = (yy - r["row"]) ** 2 + (xx - r["col"]) ** 2 <= max(float(r["radius_px"]), 1.0) ** 2
        if m.any():
            out.append((str(r["cls"]), m))
    return out
