"""VinDr-Mammo (PhysioNet): breast-level_annotations.csv + images/<study_id>/<image_id>.dicom.

VinDr has no pathology, only BI-RADS, so labels are a proxy (configurable): a breast's BI-RADS (the
highest of its images' ``breast_birads``) in ``malignant_birads`` (default 4, 5) -> malignant, in
``benign_birads`` (default 2) -> benign, else (0, 0). There are no patient ids: patient = exam = study_id.
Official split: ``split`` 'training' -> train, 'test' -> test; val carved from train patients.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from mvmammo.data.sources.common import SourceError, SplitOptions, build_table, read_source_csv, require_columns
from mvmammo.data.sources.report import ImportReport

SPLITS = {"training": "train", "train": "train", "test": "test", "val": "val", "validation": "val"}


def parse_birads(value) -> int | None:
    """'BI-RADS 4' / '4' / 4.0 -> 4; missing -> None; '4A' -> 4."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    m = re.search(r"(\d)", str(value))
    if not m:
        raise SourceError(f"BI-RADS value {value!r} is not a category 0-6")
    return int(m.group(1))


def image_file(root: Path, study_id, image_id) -> Path:
    """<root>/<study_id>/<image_id>.dicom (or .dcm when only that exists)."""
    folder = root / str(study_id)
    return next((folder / f"{image_id}{e}" for e in (".dicom", ".dcm") if (folder / f"{image_id}{e}").exists()),
                folder / f"{image_id}.dicom")


def findings_file(annotations: str | Path, findings: str | Path | None) -> Path | None:
    """The finding_annotations.csv to read: the one given, else the one beside breast-level_annotations.csv."""
    if findings is not None:
        path = Path(findings)
        if not path.exists():
            raise SourceError(f"--findings {findings}: file not found; give VinDr-Mammo's finding_annotations.csv")
        return path
    beside = Path(annotations).with_name("finding_annotations.csv")
    return beside if beside.exists() else None


def lesion_boxes(findings: Path, root: Path, benign_birads, malignant_birads) -> pd.DataFrame:
    """The findings' boxes as annotation-table rows, each naming the image file it was drawn on."""
    from mvmammo.data.annotations import AnnotationError, from_vindr

    try:
        ann = from_vindr(findings, tuple(malignant_birads), tuple(benign_birads))
    except AnnotationError as exc:
        raise SourceError(str(exc)) from None
    if "image_id" in ann.columns:
        ann["image_path"] = [str(image_file(root, s, i).resolve()) for s, i in zip(ann["exam_id"], ann["image_id"])]
    return ann


def import_vindr(annotations: str | Path, images: str | Path, benign_birads=(2,), malignant_birads=(4, 5),
                 official_split: bool = True,
                 split: SplitOptions | None = None,
                 allow_missing_view: bool = False,
                 findings: str | Path | None = None) -> tuple[pd.DataFrame, ImportReport]:
    """The exam table (breast-level BI-RADS proxies) and, from finding_annotations.csv (``findings``, or the one
    beside ``annotations``), the lesion boxes as ``report.annotations`` for the annotation table."""
    benign_birads, malignant_birads = set(map(int, benign_birads)), set(map(int, malignant_birads))
    if benign_birads & malignant_birads:
        raise SourceError(f"BI-RADS {sorted(benign_birads & malignant_birads)} is in both the benign and the "
                          "malignant set")
    root = Path(images)
    df = read_source_csv(annotations, dtype=str)
    require_columns(df, ["study_id", "image_id", "laterality", "view_position", "breast_birads"], str(annotations))
    if len(df) == 0:
        raise SourceError(f"{annotations}: no rows (header only)")
    rule = (f"BI-RADS proxy: breast BI-RADS (max over its images) in {sorted(malignant_birads)} -> malignant, "
            f"in {sorted(benign_birads)} -> benign, else (0, 0)")
    report = ImportReport("vindr", inputs={"annotations": str(annotations), "images": str(root)}, label_rule=rule)
    report.notes.append("VinDr-Mammo has no biopsy labels: benign/malignant are BI-RADS proxies")
    img_rows, lab_rows = [], []
    for k, r in df.iterrows():
        path = image_file(root, r["study_id"], r["image_id"])
        img_rows.append({"patient_id": r["study_id"], "exam_id": r["study_id"], "side": r["laterality"],
                         "view": r["view_position"], "path": str(path.resolve()), "order": k})
        try:
            birads = parse_birads(r["breast_birads"])
        except SourceError as exc:
            raise SourceError(f"{annotations}: row {k + 2}, column 'breast_birads': {exc}") from None
        row = {"patient_id": r["study_id"], "exam_id": r["study_id"], "side": r["laterality"], "birads": birads,
               "density": r.get("breast_density")}
        if official_split and "split" in df.columns:
            s = SPLITS.get(str(r["split"]).strip().lower())
            if s is None:
                raise SourceError(f"{annotations}: row {k + 2}, column 'split': unknown split value {r['split']!r} "
                                  f"(expected {', '.join(sorted(SPLITS))})")
            row["split"] = s
        lab_rows.append(row)
    labels = pd.DataFrame(lab_rows)
    labels["side_key"] = labels["side"].astype(str).str.strip().str.upper().str[0]
    top = labels.groupby(["patient_id", "side_key"])["birads"].transform("max")
    labels["birads"] = top
    labels["benign"] = [int(b in benign_birads) if pd.notna(b) else 0 for b in top]
    labels["malignant"] = [int(b in malignant_birads) if pd.notna(b) else 0 for b in top]
    labels = labels.drop(columns="side_key")
    if "split" in labels.columns:
        report.split_rule = "official: training -> train, test -> test"
    table = build_table(pd.DataFrame(img_rows), labels, report, split or SplitOptions(),
                        allow_missing_view=allow_missing_view)
    found = findings_file(annotations, findings)
    if found is not None:
        report.inputs["findings"] = str(found)
        report.annotations = lesion_boxes(found, root, benign_birads, malignant_birads)
    else:
        report.notes.append("no finding_annotations.csv beside the breast-level CSV (or --findings): no annotation "
                            "table (the patch stage needs one)")
    return table, report
