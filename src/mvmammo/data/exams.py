"""The exam table: one row per breast, the contract every source produces and every consumer reads.

Required columns: patient_id, exam_id, side (L/R), cc_path, mlo_path, benign (0/1), malignant (0/1),
split (train/val/test). Optional: cc_heatmap_benign, cc_heatmap_malignant, mlo_heatmap_benign,
mlo_heatmap_malignant (paths), cc_view / mlo_view (the view code the source recorded), breast_id, and any
source-specific columns, kept as they came. Relative paths are relative to the table's folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

REQUIRED_COLUMNS = ("patient_id", "exam_id", "side", "cc_path", "mlo_path", "benign", "malignant", "split")
HEATMAP_COLUMNS = ("cc_heatmap_benign", "cc_heatmap_malignant", "mlo_heatmap_benign", "mlo_heatmap_malignant")
PATH_COLUMNS = ("cc_path", "mlo_path") + HEATMAP_COLUMNS
SIDES = ("L", "R")
SPLITS = ("train", "val", "test")
# View codes a source may record; the canonical view is cc or mlo.
VIEW_CODES = {"cc": "cc", "xccl": "cc", "mlo": "mlo", "ml": "mlo"}


class TableError(ValueError):
    """The exam table is not valid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet exam table; ids stay strings, paths stay as written."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: exam table not found")
    if path.suffix.lower() in (".parquet", ".pq"):
        df = pd.read_parquet(path)
    elif path.suffix.lower() in (".csv", ".txt"):
        df = pd.read_csv(path, dtype={"patient_id": str, "exam_id": str, "side": str, "split": str})
    else:
        raise ValueError(f"{path}: unknown table format {path.suffix!r}; use .csv or .parquet")
    df.attrs["root"] = str(path.parent.resolve())
    return df


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".parquet", ".pq"):
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)


def breast_ids(df: pd.DataFrame) -> pd.Series:
    """A stable breast identifier: the table's own breast_id, else patient/exam/side."""
    if "breast_id" in df.columns:
        return df["breast_id"].astype(str)
    return df["patient_id"].astype(str) + "/" + df["exam_id"].astype(str) + "/" + df["side"].astype(str)


def resolve_path(df: pd.DataFrame, value: str) -> Path:
    p = Path(str(value))
    if p.is_absolute():
        return p
    return Path(df.attrs.get("root", ".")) / p


def _row_name(i: int) -> str:
    # Row numbers as a spreadsheet shows them: the header is line 1, the first data row line 2.
    return f"row {i + 2}"


def validate(df: pd.DataFrame, check_files: bool = True) -> list[str]:
    """Every problem of the table, one line each, naming the row and the column. Empty = valid."""
    problems: list[str] = []
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    for c in missing:
        problems.append(f"column {c!r}: missing (required: {', '.join(REQUIRED_COLUMNS)})")
    if missing:
        return problems
    if len(df) == 0:
        return ["table: no rows"]

    for i, row in enumerate(df.itertuples(index=False)):
        r = row._asdict()
        for label in ("benign", "malignant"):
            v = r[label]
            if not _is01(v):
                problems.append(f"{_row_name(i)}, column {label!r}: value {v!r} is not 0 or 1")
        if str(r["side"]).strip().upper() not in SIDES:
            problems.append(f"{_row_name(i)}, column 'side': unknown side {r['side']!r}; use L or R")
        if str(r["split"]).strip() not in SPLITS:
            problems.append(f"{_row_name(i)}, column 'split': unknown split {r['split']!r}; use {', '.join(SPLITS)}")
        for vc in ("cc_view", "mlo_view"):
            if vc in r and pd.notna(r[vc]):
                canon = VIEW_CODES.get(str(r[vc]).strip().lower())
                if canon != vc.split("_")[0]:
                    problems.append(f"{_row_name(i)}, column {vc!r}: view value {r[vc]!r} is not a "
                                    f"{vc.split('_')[0].upper()} view code ({', '.join(sorted(VIEW_CODES))})")
        for col in PATH_COLUMNS:
            if col not in r:
                continue
            v = r[col]
            if col in ("cc_path", "mlo_path") and (pd.isna(v) or str(v).strip() == ""):
                problems.append(f"{_row_name(i)}, column {col!r}: empty path (missing view)")
                continue
            if check_files and pd.notna(v) and str(v).strip() and not resolve_path(df, v).exists():
                problems.append(f"{_row_name(i)}, column {col!r}: image file not found: {resolve_path(df, v)}")

    ids = breast_ids(df)
    dup = ids[ids.duplicated(keep=False)]
    for bid, idx in dup.groupby(dup).groups.items():
        rows = ", ".join(_row_name(df.index.get_loc(j)) for j in idx)
        problems.append(f"{rows}, columns patient_id/exam_id/side: duplicate breast {bid!r}")

    splits_per_patient = df.groupby(df["patient_id"].astype(str))["split"].nunique()
    for pid in splits_per_patient[splits_per_patient > 1].index:
        rows_of = [k for k, p in enumerate(df["patient_id"].astype(str)) if p == pid]
        found = sorted(set(df["split"].iloc[rows_of].astype(str)))
        problems.append(f"{_row_name(rows_of[0])}, column 'split': patient {pid!r} appears in several splits "
                        f"({', '.join(found)}); splits must be by patient")
    return problems


def _is01(v) -> bool:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return f in (0.0, 1.0)


def load_valid(path: str | Path, check_files: bool = True) -> pd.DataFrame:
    """Read and validate; raise :class:`TableError` listing every problem. Normalises side, labels, ids."""
    df = read_table(path)
    problems = validate(df, check_files=check_files)
    if problems:
        raise TableError([f"{path}: {p}" for p in problems])
    df = df.copy()
    df["side"] = df["side"].astype(str).str.strip().str.upper()
    df["split"] = df["split"].astype(str).str.strip()
    for label in ("benign", "malignant"):
        df[label] = df[label].astype(float).astype(int)
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

    def lines(self) -> list[str]:
        out = [f"{self.breasts} breasts, {self.exams} exams, {self.patients} patients",
               f"benign {self.benign} ({self.benign / max(self.breasts, 1):.1%}), "
               f"malignant {self.malignant} ({self.malignant / max(self.breasts, 1):.1%})"]
        out += [f"  {k}: {v} breasts" for k, v in self.by_split.items()]
        return out


def summarize(df: pd.DataFrame) -> TableSummary:
    return TableSummary(
        breasts=len(df),
        patients=df["patient_id"].nunique(),
        exams=df[["patient_id", "exam_id"]].drop_duplicates().shape[0],
        by_split={s: int((df["split"] == s).sum()) for s in SPLITS},
        benign=int(df["benign"].astype(int).sum()),
        malignant=int(df["malignant"].astype(int).sum()),
    )
