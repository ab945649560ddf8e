"""The exam table: one row per breast, the contract every source produces and every consumer reads.

Required columns: patient_id, exam_id, side (L/R), cc_path, mlo_path, benign (0/1), malignant (0/1),
split (train/val/test). Optional: cc_heatmap_benign, cc_heatmap_malignant, mlo_heatmap_benign,
mlo_heatmap_malignant (paths), cc_view / mlo_view (the view code the source recorded), breast_id, and any
source-specific columns, kept as they came. Relative paths are relative to the table's folder.

Relaxations, each asked for explicitly by the caller (train and evaluate ask for none):
- ``require_labels=False`` (a table to predict on): benign/malignant may be absent or empty; they are -1
  (unknown) in the loaded frame. Values other than 0, 1, -1 and empty are still errors.
- ``require_split=False``: a missing split column is filled with "all".
- ``allow_missing_view=True``: one of cc_path / mlo_path may be empty (not both); the heatmaps of an absent
  view must be empty too.

The checks themselves (vectorised, linear in the rows) live in :mod:`mvmammo.data.table_checks`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mvmammo.data.schema import (ALL_SPLIT, HEATMAP_COLUMNS, LABEL_COLUMNS, PATH_COLUMNS,  # noqa: F401 (re-exported)
                                 REQUIRED_COLUMNS, SIDES, SPLITS, UNKNOWN_LABEL, VIEW_CODES, VIEW_PATH_COLUMNS,
                                 breast_ids, is_empty, label_values, required_columns)
from mvmammo.errors import MvError


class TableError(MvError, ValueError):
    """The exam table is not valid; ``problems`` holds one line per problem, the message is one line."""

    shown = 3  # problems quoted in the message; `mvmammo validate` lists them all

    def __init__(self, problems: list[str]):
        self.problems = [str(p) for p in problems]
        head = "; ".join(self.problems[:self.shown])
        more = len(self.problems) - self.shown
        super().__init__(head + (f"; ... and {more} more problems (`mvmammo validate TABLE` lists them)"
                                 if more > 0 else ""))


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet exam table; ids stay strings, paths stay as written."""
    from mvmammo.data.csvread import read_csv

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: exam table not found")
    if path.is_dir():
        raise TableError([f"{path}: is a folder; expected an exam table file (.csv or .parquet)"])
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several unrelated types for a damaged file
            raise TableError([f"{path}: not a readable Parquet file ({' '.join(str(exc).split())})"]) from None
    elif path.suffix.lower() in (".csv", ".txt"):
        df = read_csv(path, dtype={"patient_id": str, "exam_id": str, "side": str, "split": str})
    else:
        raise TableError([f"{path}: unknown table format {path.suffix!r}; use .csv or .parquet"])
    df.attrs["root"] = str(path.parent.resolve())
    return df


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    """Write atomically: a temporary file in the same folder, then os.replace (no half-written table)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def resolve_path(df: pd.DataFrame, value: str) -> Path:
    p = Path(str(value))
    if p.is_absolute():
        return p
    return Path(df.attrs.get("root", ".")) / p


def view_present(df: pd.DataFrame) -> np.ndarray:
    """(N, 2) bool: [cc, mlo] has a path, per row."""
    return np.stack([~is_empty(df[c]).to_numpy() if c in df.columns else np.zeros(len(df), bool)
                     for c in VIEW_PATH_COLUMNS], axis=1).reshape(len(df), 2)


def labelled(df: pd.DataFrame) -> bool:
    """Every row has benign and malignant in {0, 1} (a table that can be trained or evaluated on)."""
    return all(c in df.columns and bool(label_values(df[c]).isin([0.0, 1.0]).all()) for c in LABEL_COLUMNS)


def validate(df: pd.DataFrame, check_files: bool = True, *, allow_missing_view: bool = False,
             require_labels: bool = True, require_split: bool = True, strict_paths: bool = False) -> list[str]:
    """Every problem of the table, one line each, naming the row and the column. Empty = valid.

    Paths that leave the table's folder are warnings (see :func:`check`), errors only with ``strict_paths``.
    """
    from mvmammo.data.table_checks import check

    found = check(df, check_files, allow_missing_view=allow_missing_view, require_labels=require_labels,
                  require_split=require_split, strict_paths=strict_paths)
    return [p.text for p in found.errors]


def load_valid(path: str | Path, check_files: bool = True, *, allow_missing_view: bool = False,
               require_labels: bool = True, require_split: bool = True) -> pd.DataFrame:
    """Read and validate; raise :class:`TableError` listing every problem. Normalises side, labels, ids.

    Unknown labels (require_labels=False) become -1; a missing split (require_split=False) becomes "all".
    """
    df = read_table(path)
    problems = validate(df, check_files=check_files, allow_missing_view=allow_missing_view,
                        require_labels=require_labels, require_split=require_split)
    if problems:
        raise TableError([f"{path}: {p}" for p in problems])
    df = df.copy()
    df["side"] = df["side"].astype(str).str.strip().str.upper()
    df["split"] = df["split"].astype(str).str.strip() if "split" in df.columns else ALL_SPLIT
    for label in LABEL_COLUMNS:
        values = label_values(df[label]) if label in df.columns else pd.Series(np.nan, index=df.index)
        df[label] = values.fillna(UNKNOWN_LABEL).astype(int)
    df["breast_id"] = breast_ids(df)
    return df.reset_index(drop=True)


@dataclass(frozen=True)
class TableSummary:
    breasts: int
    patients: int
    exams: int
    by_split: dict
    benign: int
    malignant: int
    unlabelled: int = 0   # breasts with a label that is not 0/1 (unknown, -1 or empty)
    one_view: int = 0     # breasts with only one of CC / MLO

    def lines(self) -> list[str]:
        n = max(self.breasts, 1)
        out = [f"{self.breasts} breasts, {self.exams} exams, {self.patients} patients",
               f"benign {self.benign} ({self.benign / n:.1%}), malignant {self.malignant} ({self.malignant / n:.1%})"]
        if self.unlabelled:
            out.append(f"unlabelled (label unknown) {self.unlabelled} ({self.unlabelled / n:.1%}): "
                       "usable for predict, not for train/evaluate")
        if self.one_view:
            out.append(f"one view only {self.one_view} ({self.one_view / n:.1%})")
        out += [f"  {k}: {v} breasts" for k, v in self.by_split.items()]
        return out


def summarize(df: pd.DataFrame) -> TableSummary:
    labels = {c: label_values(df[c]) if c in df.columns else pd.Series(np.nan, index=df.index)
              for c in LABEL_COLUMNS}
    known = labels["benign"].isin([0.0, 1.0]) & labels["malignant"].isin([0.0, 1.0])
    split = df["split"].astype(str).str.strip() if "split" in df.columns else pd.Series(ALL_SPLIT, index=df.index)
    names = list(SPLITS) + sorted(set(split) - set(SPLITS))
    return TableSummary(
        breasts=len(df),
        patients=df["patient_id"].nunique(),
        exams=df[["patient_id", "exam_id"]].drop_duplicates().shape[0],
        by_split={s: int((split == s).sum()) for s in names if s in SPLITS or (split == s).any()},
        benign=int((labels["benign"] == 1).sum()),
        malignant=int((labels["malignant"] == 1).sum()),
        unlabelled=int((~known).sum()),
        one_view=int((view_present(df).sum(axis=1) == 1).sum()),
    )
