"""RSNA Screening Mammography (Kaggle 2022): train.csv + train_images/<patient_id>/<image_id>.dcm.

Labels per breast (patient, laterality): malignant = any image row with cancer == 1; benign = a biopsy
(any biopsy == 1) and not cancer -- the only benign evidence the data has, so never (1, 1). Several
images per view are common: images are ordered by image_id (ascending) and the first of the best view
is kept. train.csv has no study id: exam = patient. No official labelled split: random by patient.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mvmammo.data.sources.common import (SourceError, SplitOptions, build_table, column01, read_source_csv,
                                         require_columns)
from mvmammo.data.sources.report import ImportReport

KEEP = ("site_id", "age", "density", "BIRADS", "implant", "invasive", "machine_id", "difficult_negative_case")


def import_rsna(train_csv: str | Path, images: str | Path,
                split: SplitOptions | None = None,
                allow_missing_view: bool = False) -> tuple[pd.DataFrame, ImportReport]:
    root = Path(images)
    df = read_source_csv(train_csv, dtype=str)
    require_columns(df, ["patient_id", "image_id", "laterality", "view", "cancer", "biopsy"], str(train_csv))
    if len(df) == 0:
        raise SourceError(f"{train_csv}: no rows (header only)")
    # Checked in file order, so that a bad value names the row a spreadsheet shows.
    cancer01, biopsy01 = column01(df, "cancer", str(train_csv)), column01(df, "biopsy", str(train_csv))
    df = df.assign(cancer01=cancer01, biopsy01=biopsy01)
    df["_order"] = pd.to_numeric(df["image_id"], errors="coerce")
    df = df.sort_values(["_order", "image_id"], kind="stable").reset_index(drop=True)
    report = ImportReport("rsna", inputs={"train_csv": str(train_csv), "images": str(root)},
                          label_rule="malignant = any cancer == 1; benign = any biopsy == 1 and no cancer",
                          order_rule="image_id ascending")
    img_rows = [{"patient_id": r["patient_id"], "exam_id": r["patient_id"], "side": r["laterality"],
                 "view": r["view"], "path": str((root / str(r["patient_id"]) / f"{r['image_id']}.dcm").resolve()),
                 "order": k} for k, r in df.iterrows()]
    lab = df
    lab["side_key"] = lab["laterality"].astype(str).str.strip()
    g = lab.groupby(["patient_id", "side_key"], sort=False)
    cancer, biopsy = g["cancer01"].transform("max"), g["biopsy01"].transform("max")
    labels = pd.DataFrame({"patient_id": lab["patient_id"], "exam_id": lab["patient_id"], "side": lab["laterality"],
                           "malignant": cancer, "benign": ((biopsy == 1) & (cancer == 0)).astype(int)})
    for c in KEEP:
        if c in lab.columns:
            labels[c.lower()] = lab[c]
    table = build_table(pd.DataFrame(img_rows), labels, report, split or SplitOptions(),
                        allow_missing_view=allow_missing_view)
    return table, report
