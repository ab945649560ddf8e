"""Lesion annotations in one table, from the three layouts we meet, and their rasterisation per image.

The annotation table (CSV), one row per lesion outline in one image:
  patient_id, exam_id, side (L/R), view (cc/mlo), cls (malignant/benign), and one geometry:
    - ``mask_path``: a binary ROI mask at the image's size (CBIS-DDSM), relative to the table's folder;
    - ``xmin, ymin, xmax, ymax``: a box in image pixels, end exclusive (VinDr-Mammo finding annotations);
    - ``row, col, radius_px``: a disk (the synthetic cohort's lesions.csv).
Readers for each source's own layout turn it into this table:
  :func:`from_synthetic` (lesions.csv: only lesions visible in a view are annotated in it),
  :func:`from_cbis` (CBIS case-description CSV: pathology + ROI mask file path; BENIGN_WITHOUT_CALLBACK counts
  as benign, as the CBIS importer's default), :func:`from_vindr` (finding_annotations.csv: boxes, class from the
  finding's BI-RADS with the VinDr importer's proxy: 4-5 malignant, 2 benign; other findings are skipped).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mvmammo.errors import MvError

KEYS = ("patient_id", "exam_id", "side", "view")
LESION_CLASSES = ("malignant", "benign")


class AnnotationError(MvError, ValueError):
    """An annotation file is not usable; the message names the file, row and column."""


def _need(df: pd.DataFrame, cols, path) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise AnnotationError(f"{path}: no column(s) {', '.join(missing)}; see docs/heatmaps.md for the layouts")


def from_synthetic(lesions_csv: str | Path) -> pd.DataFrame:
    path = Path(lesions_csv)
    df = pd.read_csv(path, dtype={"patient_id": str, "exam_id": str})
    _need(df, ["patient_id", "exam_id", "side", "cls"] + [f"{v}_{k}" for v in ("cc", "mlo")
                                                         for k in ("row", "col", "radius_px", "visible")], path)
    out = []
    for v in ("cc", "mlo"):
        vis = df[df[f"{v}_visible"].astype(int) == 1]
        out.append(pd.DataFrame({"patient_id": vis["patient_id"], "exam_id": vis["exam_id"], "side": vis["side"],
                                 "view": v, "cls": vis["cls"], "row": vis[f"{v}_row"], "col": vis[f"{v}_col"],
                                 "radius_px": vis[f"{v}_radius_px"]}))
    res = pd.concat(out, ignore_index=True)
    res.attrs["root"] = str(path.parent.resolve())
    return res


def from_cbis(case_csv: str | Path, root: str | Path | None = None) -> pd.DataFrame:
    """CBIS-DDSM description CSV (patient_id, left or right breast, image view, pathology, ROI mask file path)."""
    path = Path(case_csv)
    df = pd.read_csv(path, dtype=str)
    df.columns = [c.strip().replace(" ", "_").lower() for c in df.columns]
    _need(df, ["patient_id", "left_or_right_breast", "image_view", "pathology", "roi_mask_file_path"], path)
    cls = df["pathology"].str.strip().str.upper().map({"MALIGNANT": "malignant", "BENIGN": "benign",
                                                       "BENIGN_WITHOUT_CALLBACK": "benign"})
    bad = cls.isna()
    if bad.any():
        k = int(np.flatnonzero(bad.to_numpy())[0])
        raise AnnotationError(f"{path}: row {k + 2}, column 'pathology': {df['pathology'].iloc[k]!r}; expected "
                              "MALIGNANT, BENIGN or BENIGN_WITHOUT_CALLBACK")
    base = Path(root) if root is not None else path.parent
    res = pd.DataFrame({"patient_id": df["patient_id"], "exam_id": df["patient_id"],
                        "side": df["left_or_right_breast"].str.strip().str.upper().str[0],
                        "view": df["image_view"].str.strip().str.lower(), "cls": cls,
                        "mask_path": [str((base / p.strip()).resolve()) for p in df["roi_mask_file_path"]]})
    res.attrs["root"] = str(path.parent.resolve())
    return res


def _birads(value) -> float:
    digits = "".join(ch for ch in str(value) if ch.isdigit())
    return float(digits[:1]) if digits else np.nan


def from_vindr(findings_csv: str | Path, malignant_birads=(4, 5), benign_birads=(2,)) -> pd.DataFrame:
    """VinDr-Mammo finding_annotations.csv (study_id, laterality, view_position, finding_birads, box)."""
    path = Path(findings_csv)
    df = pd.read_csv(path, dtype={"study_id": str, "image_id": str})
    _need(df, ["study_id", "laterality", "view_position", "finding_birads", "xmin", "ymin", "xmax", "ymax"], path)
    b = df["finding_birads"].map(_birads)
    cls = np.where(b.isin(malignant_birads), "malignant", np.where(b.isin(benign_birads), "benign", ""))
    keep = (cls != "") & df[["xmin", "ymin", "xmax", "ymax"]].notna().all(axis=1)
    d = df[keep]
    res = pd.DataFrame({"patient_id": d["study_id"], "exam_id": d["study_id"],
                        "side": d["laterality"].str.strip().str.upper().str[0],
                        "view": d["view_position"].str.strip().str.lower().map(lambda v: "cc" if v == "cc" else "mlo"),
                        "cls": cls[keep.to_numpy()]})
    for c in ("xmin", "ymin", "xmax", "ymax"):
        res[c] = d[c].astype(float)
    res.attrs["root"] = str(path.parent.resolve())
    return res.reset_index(drop=True)


def read_annotations(path: str | Path, layout: str = "auto", root: str | Path | None = None) -> pd.DataFrame:
    """An annotation table from a file in any of the layouts (``auto`` guesses from the columns)."""
    path = Path(path)
    if not path.exists():
        raise AnnotationError(f"{path}: annotation file not found; give --annotations (or, for a synthetic "
                              "cohort, keep lesions.csv beside exams.csv)")
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
