"""The annotation table: lesion outlines per image, in one layout whatever the source.

One row per lesion outline in one image:
  patient_id, exam_id, side (L/R), view (cc/mlo), cls (malignant/benign), and one geometry:
    - ``mask_path``: a binary ROI mask at the image's size (CBIS-DDSM), absolute or relative to the table's folder;
    - ``xmin, ymin, xmax, ymax``: a box in image pixels, end exclusive (VinDr-Mammo finding annotations);
    - ``row, col, radius_px``: a disk (the synthetic cohort's lesions.csv).
  Optional: ``image_path`` (the source image the outline was drawn on), ``abnormality``, ``source_row``.
Readers for each source's own layout turn it into this table:
  :func:`from_synthetic` (lesions.csv: only lesions visible in a view are annotated in it),
  :func:`from_cbis` (CBIS case-description CSV: pathology + ROI mask file path; BENIGN_WITHOUT_CALLBACK counts
  as benign, as the CBIS importer's default), :func:`from_vindr` (finding_annotations.csv: boxes, class from the
  finding's BI-RADS with the VinDr importer's proxy: 4-5 malignant, 2 benign; other findings are skipped).

The importers that know lesions (``mvmammo import cbis``, ``mvmammo import vindr``) write this table beside the
exam table (:func:`annotation_path`: ``exams.csv`` -> ``exams_annotations.csv``), keeping only outlines drawn on
an image the exam table uses (:func:`for_table`), so ``mvmammo patches extract exams.csv`` finds them without
being told. It lives in ``data`` (not ``patches``) because the importers write it: data flows from the sources
to the tables, and the patch stage reads them.
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
                        "view": d["view_position"].map(_slot), "cls": cls[keep.to_numpy()],
                        "view_code": d["view_position"].astype(str).str.strip().str.upper()})
    if "image_id" in d.columns:
        res["image_id"] = d["image_id"].to_numpy()
    for c in ("xmin", "ymin", "xmax", "ymax"):
        res[c] = d[c].astype(float)
    res = res[res["view"].notna()]   # views that fill no slot (LM, AT, spot views...) annotate no table image
    res.attrs["root"] = str(path.parent.resolve())
    return res.reset_index(drop=True)


def _slot(value) -> str | None:
    """A source's view string -> the exam table's slot ('cc' / 'mlo'), None for views that fill no slot."""
    from mvmammo.data.sources.vocab import VocabError, normalise_view, slot_of

    try:
        slot = slot_of(normalise_view(value))
    except VocabError:
        return None
    return slot[0] if slot else None


def annotation_path(table_path: str | Path) -> Path:
    """exams.csv -> exams_annotations.csv, next to the exam table (what the importers write)."""
    p = Path(table_path)
    return p.with_name(p.stem + "_annotations.csv")


def for_table(ann: pd.DataFrame, table: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The outlines of ``ann`` drawn on an image ``table`` uses, and how many others were left out.

    An outline belongs to a table image when its (patient_id, exam_id, side, view) names a kept breast's view
    and, where the outline says which source image it was drawn on (``image_path``), that is the file in the
    table's slot (a breast with two CC images keeps one; the other's outlines do not fit it)."""
    if len(ann) == 0:
        return ann, 0
    paths = {}
    for _, r in table.iterrows():
        for v in ("cc", "mlo"):
            p = r.get(f"{v}_path")
            if isinstance(p, str) and p.strip():
                # Relative paths (a table written elsewhere) cannot be compared: the key alone decides then.
                paths[(str(r["patient_id"]), str(r["exam_id"]), str(r["side"]), v)] = (
                    str(Path(p).resolve()) if Path(p).is_absolute() else "")
    keep = []
    for _, r in ann.iterrows():
        key = (str(r["patient_id"]), str(r["exam_id"]), str(r["side"]), str(r["view"]))
        src = r.get("image_path")
        ok = key in paths and (not isinstance(src, str) or not src or not paths[key]
                               or str(Path(src).resolve()) == paths[key])
        keep.append(ok)
    keep = np.asarray(keep, bool)
    return ann[keep].reset_index(drop=True), int((~keep).sum())


def write_annotations(ann: pd.DataFrame, table_path: str | Path) -> Path:
    """Write the annotation table beside the exam table (atomic); returns its path."""
    from mvmammo.atomic import write_text

    path = annotation_path(table_path)
    write_text(path, ann.to_csv(index=False))
    return path
