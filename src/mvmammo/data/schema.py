"""The exam table's vocabulary: its column names, codes and the cell rules every check shares.

Kept apart from :mod:`mvmammo.data.exams` (reading, writing, loading) and :mod:`mvmammo.data.table_checks`
(the checks) so that both import it and neither imports the other.
"""
from __future__ import annotations

import pandas as pd

REQUIRED_COLUMNS = ("patient_id", "exam_id", "side", "cc_path", "mlo_path", "benign", "malignant", "split")
LABEL_COLUMNS = ("benign", "malignant")
HEATMAP_COLUMNS = ("cc_heatmap_benign", "cc_heatmap_malignant", "mlo_heatmap_benign", "mlo_heatmap_malignant")
VIEW_PATH_COLUMNS = ("cc_path", "mlo_path")
PATH_COLUMNS = VIEW_PATH_COLUMNS + HEATMAP_COLUMNS
SIDES = ("L", "R")
SPLITS = ("train", "val", "test")
ALL_SPLIT = "all"        # the split of every row of a table loaded with require_split=False and no split column
UNKNOWN_LABEL = -1       # benign/malignant of an unlabelled breast (require_labels=False)
# View codes a source may record; the canonical view is cc or mlo.
VIEW_CODES = {"cc": "cc", "xccl": "cc", "mlo": "mlo", "ml": "mlo"}


def required_columns(require_labels: bool = True, require_split: bool = True) -> tuple[str, ...]:
    return tuple(c for c in REQUIRED_COLUMNS if (require_labels or c not in LABEL_COLUMNS)
                 and (require_split or c != "split"))


def breast_ids(df: pd.DataFrame) -> pd.Series:
    """A stable breast identifier: the table's own breast_id, else patient/exam/side."""
    if "breast_id" in df.columns:
        return df["breast_id"].astype(str)
    return df["patient_id"].astype(str) + "/" + df["exam_id"].astype(str) + "/" + df["side"].astype(str)


def is_empty(col: pd.Series) -> pd.Series:
    """True where a cell holds no value (NaN/None or only whitespace)."""
    return col.isna() | (col.astype(str).str.strip() == "")


def label_values(col: pd.Series) -> pd.Series:
    """Cells as floats (0.0, 1.0, -1.0, ...); empty or non-numeric cells are NaN."""
    if col.dtype == bool:
        return col.astype(float)
    if pd.api.types.is_numeric_dtype(col):
        return col.astype(float)
    return pd.to_numeric(col.astype(str).str.strip(), errors="coerce")
