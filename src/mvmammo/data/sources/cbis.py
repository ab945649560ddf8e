"""CBIS-DDSM: the four case-description CSVs + the TCIA DICOM folder.

One CSV row per abnormality. Column names are normalised (strip, lower case, spaces -> '_'), so the calc
files' ``breast density`` (with a space) reads like the mass files' ``breast_density``. Labels per breast
(patient, side) = OR over its rows of both views: MALIGNANT -> malignant; BENIGN -> benign;
BENIGN_WITHOUT_CALLBACK -> benign only with ``bwc_benign`` (default on).

Files: the CSV path (``Mass-Test_P_00173_LEFT_CC/<study>/<series>/000000.dcm``) is tried under the images
root as written; TCIA downloads lay files out differently, so otherwise the DICOM whose PatientID equals
the path's first folder is used (the full mammogram = SeriesDescription 'full mammogram images', else the
largest). ROI masks: the cropped / ROI-mask columns are sometimes swapped, so the mask is recognised as
the file of the pair whose size equals the full image, whatever column named it.

Split: official (a patient with any row in a *test* CSV is test; val carved from train patients) or random.
DDSM has one exam per patient: exam_id = patient_id.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mvmammo.data.dicom import DicomError
from mvmammo.data.sources.common import (SourceError, SplitOptions, build_table, header_info, read_source_csv,
                                         require_columns)
from mvmammo.data.sources.report import ImportReport

COLUMNS = ["patient_id", "left_or_right_breast", "image_view", "pathology", "image_file_path"]


def read_case_csv(path: str | Path) -> pd.DataFrame:
    df = read_source_csv(path, dtype=str)
    df.columns = [" ".join(str(c).split()).lower().replace(" ", "_") for c in df.columns]
    require_columns(df, COLUMNS, str(path))
    for c in ("image_file_path", "cropped_image_file_path", "roi_mask_file_path"):
        if c in df.columns:  # path cells carry embedded newlines / spaces in the official files
            df[c] = df[c].fillna("").map(lambda s: "".join(str(s).split()))
    name = Path(path).name.lower()
    df["official_split"] = "test" if "test" in name else ("train" if "train" in name else None)
    df["abnormality"] = "calc" if "calc" in name else ("mass" if "mass" in name else None)
    df["source_file"] = Path(path).name
    return df


class DicomIndex:
    """PatientID -> DICOM files under a root, built lazily on first miss (one header read per file)."""

    def __init__(self, root: Path):
        self.root, self._by_pid = root, None

    def files(self, pid: str) -> list[str]:
        if self._by_pid is None:
            self._by_pid = {}
            for p in sorted(self.root.rglob("*.dcm")):
                try:
                    self._by_pid.setdefault(header_info(str(p))["patient_id"], []).append(str(p))
                except DicomError:
                    continue
        return self._by_pid.get(pid, [])


def _resolve_full(root: Path, rel: str, index: DicomIndex) -> tuple[str | None, str | None]:
    if not rel:
        return None, "no image file path"
    direct = root / rel
    if direct.exists():
        return str(direct.resolve()), None
    cands = index.files(rel.split("/")[0])
    if not cands:
        return str(direct), "image file not found"
    full = [c for c in cands if "full" in header_info(c)["series"].lower()]
    pick = full or sorted(cands, key=lambda c: -header_info(c)["rows"] * header_info(c)["cols"])
    return str(Path(pick[0]).resolve()), None


def _roi_mask(root: Path, row, full: str | None, index: DicomIndex) -> str | None:
    """The ROI mask of one abnormality: the candidate whose size equals the full image."""
    if not full or not Path(full).exists():
        return None
    try:
        size = (header_info(full)["rows"], header_info(full)["cols"])
    except DicomError:
        return None
    cands = []
    for col in ("roi_mask_file_path", "cropped_image_file_path"):
        rel = str(row.get(col) or "")
        if not rel:
            continue
        cands.append(root / rel)
        cands += [Path(p) for p in index.files(rel.split("/")[0])]
    for c in cands:
        try:
            if c.exists() and str(c.resolve()) != full and (header_info(str(c))["rows"], header_info(str(c))["cols"]) == size:
                return str(c.resolve())
        except DicomError:
            continue
    return None


def import_cbis(csvs: list, images: str | Path, bwc_benign: bool = True, official_split: bool = True,
                roi_masks: bool = True, split: SplitOptions | None = None,
                allow_missing_view: bool = False) -> tuple[pd.DataFrame, ImportReport]:
    rows = pd.concat([read_case_csv(p) for p in csvs], ignore_index=True)
    if len(rows) == 0:
        raise SourceError(f"{', '.join(map(str, csvs))}: no rows (header only)")
    root = Path(images)
    index = DicomIndex(root)
    benign_values = {"BENIGN", "BENIGN_WITHOUT_CALLBACK"} if bwc_benign else {"BENIGN"}
    rule = ("malignant = any row of the breast MALIGNANT; benign = any row BENIGN"
            + (" or BENIGN_WITHOUT_CALLBACK" if bwc_benign else " (BENIGN_WITHOUT_CALLBACK not counted)"))
    report = ImportReport("cbis", inputs={"csvs": [str(p) for p in csvs], "images": str(root)}, label_rule=rule,
                          order_rule="CSV row order (files in the order given)")
    unknown = sorted(set(rows["pathology"].dropna()) - {"BENIGN", "BENIGN_WITHOUT_CALLBACK", "MALIGNANT"})
    if unknown:
        raise SourceError(f"unknown pathology values {unknown}; expected MALIGNANT, BENIGN, BENIGN_WITHOUT_CALLBACK")
    # One image per (patient, side, view, path): abnormality rows of the same image collapse here.
    img_rows, lab_rows, lesions = [], [], []
    for (pid, side, view, rel), g in rows.groupby(["patient_id", "left_or_right_breast", "image_view",
                                                    "image_file_path"], sort=False, dropna=False):
        path, problem = _resolve_full(root, rel, index)
        rec = {"patient_id": pid, "exam_id": pid, "side": side, "view": view, "path": path, "problem": problem,
               "order": int(g.index.min())}
        if roi_masks:
            masks = [_roi_mask(root, r, path, index) for _, r in g.iterrows()] if not problem else []
            rec["img_roi_masks"] = ";".join(m for m in masks if m) or None
            for (k, r), mask in zip(g.iterrows(), masks):
                lesions.append(_lesion(r, k, mask, path, benign_values))
        img_rows.append(rec)
    for _, r in rows.iterrows():
        pathology = str(r["pathology"]).strip()
        lab_rows.append({"patient_id": r["patient_id"], "exam_id": r["patient_id"],
                         "side": r["left_or_right_breast"], "benign": int(pathology in benign_values),
                         "malignant": int(pathology == "MALIGNANT"), "split": r["official_split"],
                         "abnormality_types": r["abnormality"],
                         "density": r.get("breast_density")})
    labels = pd.DataFrame(lab_rows)
    # A patient with any row in a test CSV is test (CBIS patients cross mass/calc and train/test files).
    is_test = rows.groupby("patient_id")["official_split"].agg(lambda s: (s == "test").any())
    labels["split"] = [None if pd.isna(s) else ("test" if is_test[p] else "train")
                       for p, s in zip(labels["patient_id"], labels["split"])]
    nab = rows.groupby(["patient_id", "left_or_right_breast"]).size()
    labels["n_abnormality_rows"] = [int(nab[(p, s)]) for p, s in zip(labels["patient_id"], labels["side"])]
    types = rows.groupby(["patient_id", "left_or_right_breast"])["abnormality"].agg(
        lambda s: "+".join(sorted(set(s.dropna()))))
    labels["abnormality_types"] = [types[(p, s)] for p, s in zip(labels["patient_id"], labels["side"])]
    if official_split and labels["split"].notna().all():
        report.split_rule = "official: patient in any *test* CSV -> test, else train"
    else:
        labels = labels.drop(columns="split")
        if official_split:
            report.notes.append("CSV names do not say train/test; used a random split by patient")
    table = build_table(pd.DataFrame(img_rows), labels, report, split or SplitOptions(),
                        allow_missing_view=allow_missing_view)
    if roi_masks:
        _annotations(lesions, report)
    return table, report


def _lesion(row, k: int, mask: str | None, image: str | None, benign_values: set) -> dict:
    """One abnormality row as an annotation-table row (cls None: not a lesion of either class here)."""
    from mvmammo.data.sources.vocab import normalise_side, normalise_view, slot_of

    pathology = str(row["pathology"]).strip()
    cls = "malignant" if pathology == "MALIGNANT" else ("benign" if pathology in benign_values else None)
    slot = slot_of(normalise_view(row["image_view"]))
    return {"patient_id": row["patient_id"], "exam_id": row["patient_id"],
            "side": normalise_side(row["left_or_right_breast"]), "view": slot[0] if slot else None, "cls": cls,
            "mask_path": mask, "image_path": image, "abnormality": row.get("abnormality"),
            "source_row": int(k) + 2}


def _annotations(lesions: list, report: ImportReport) -> None:
    """The lesion outlines with an ROI mask and a class, for the annotation table written beside the exam table
    (``report.annotations``; the CSV's own mask paths do not match TCIA's download layout, so the patch stage
    needs the masks this importer resolved)."""
    ann = pd.DataFrame(lesions, columns=["patient_id", "exam_id", "side", "view", "cls", "mask_path", "image_path",
                                         "abnormality", "source_row"])
    no_mask = int(ann["mask_path"].isna().sum())
    no_class = int((ann["mask_path"].notna() & ann["cls"].isna()).sum())
    ann = ann[ann["mask_path"].notna() & ann["cls"].notna() & ann["view"].notna()].reset_index(drop=True)
    if no_mask:
        report.notes.append(f"{no_mask} abnormality row(s) without an ROI mask of the full image's size: not in "
                            "the annotation table")
    if no_class:
        report.notes.append(f"{no_class} BENIGN_WITHOUT_CALLBACK outline(s) left out of the annotation table "
                            "(--no-bwc-benign)")
    report.annotations = ann
