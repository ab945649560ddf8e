"""The exam-table checks, vectorised: linear in the rows, one line per problem naming the row and column.

Rows are named as a spreadsheet shows them (header = line 1, first data row = ``row 2``). Each problem has a
``kind`` so that a listing can be capped per kind (``mvmammo validate`` prints the first 50 of each) while
every problem is counted. Errors make the table invalid; warnings (paths that leave the table's folder) do
not, unless ``strict_paths``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mvmammo.data.schema import (HEATMAP_COLUMNS, LABEL_COLUMNS, PATH_COLUMNS, SIDES, SPLITS, ALL_SPLIT,
                                VIEW_CODES, VIEW_PATH_COLUMNS, breast_ids, is_empty, label_values,
                                required_columns)

MISSING_VIEW_HINT = "pass --allow-missing-view to keep breasts with one view"
NO_LABELS_HINT = "unknown label: a table to predict on is checked with --no-labels"


@dataclass(frozen=True)
class Problem:
    kind: str   # what is wrong, for capping a listing: "label", "side", "split", "file", "path", ...
    text: str   # the whole line: "row 3, column 'side': unknown side 'X'; use L or R"

    def __str__(self) -> str:
        return self.text


@dataclass
class Findings:
    errors: list = field(default_factory=list)     # Problem
    warnings: list = field(default_factory=list)   # Problem

    def add(self, kind: str, rows: np.ndarray, texts, warn: bool = False) -> None:
        target = self.warnings if warn else self.errors
        target.extend(Problem(kind, f"row {r}, {t}") for r, t in zip(rows, texts))


def _show(v) -> str:
    """A cell value as the user wrote it: 2 not 2.0 or np.int64(2), 'yes' quoted."""
    v = v.item() if isinstance(v, np.generic) else v
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return repr(v)


def _isin(col: pd.Series, values) -> np.ndarray:
    """Series.isin for a few strings, as element-wise comparisons (isin on arrow strings is ~10x slower)."""
    out = np.zeros(len(col), dtype=bool)
    for v in values:
        out |= col.eq(v).to_numpy(dtype=bool, na_value=False)
    return out


def check(df: pd.DataFrame, check_files: bool = True, *, allow_missing_view: bool = False,
          require_labels: bool = True, require_split: bool = True, strict_paths: bool = False) -> Findings:
    """Every problem of the table; see :mod:`mvmammo.data.exams` for the contract and the relaxations."""
    found = Findings()
    required = required_columns(require_labels, require_split)
    missing = [c for c in required if c not in df.columns]
    if missing:
        found.errors += [Problem("column", f"column {c!r}: missing (required: {', '.join(required)})")
                         for c in missing]
        return found
    if len(df) == 0:
        found.errors.append(Problem("rows", "table: no rows"))
        return found
    df = df.reset_index(drop=True)
    rownum = np.arange(len(df)) + 2

    def cells(kind, mask, col, fmt, warn=False):
        idx = np.flatnonzero(np.asarray(mask, dtype=bool))
        if len(idx):
            vals = df[col].to_numpy()[idx]
            found.add(kind, rownum[idx], (f"column {col!r}: {fmt(v)}" for v in vals), warn)

    for label in LABEL_COLUMNS:
        if label not in df.columns:  # only possible with require_labels=False
            continue
        num, empty = label_values(df[label]), is_empty(df[label])
        ok = num.isin([0.0, 1.0]) if require_labels else (num.isin([0.0, 1.0, -1.0]) | empty)
        hint = "" if not require_labels else f" ({NO_LABELS_HINT})"
        cells("label", ~ok, label, lambda v: f"value {_show(v)} is not 0 or 1"
              + (hint if pd.isna(v) or str(v).strip() in ("", "-1", "-1.0") else ""))

    side = df["side"].astype(str).str.strip().str.upper()
    cells("side", ~_isin(side, SIDES), "side", lambda v: f"unknown side {_show(v)}; use L or R")

    split = None
    if "split" in df.columns:
        split = df["split"].astype(str).str.strip()
        allowed = SPLITS if require_split else SPLITS + (ALL_SPLIT,)
        cells("split", ~_isin(split, allowed), "split",
              lambda v: f"unknown split {_show(v)}; use {', '.join(allowed)}")

    for vc in ("cc_view", "mlo_view"):
        if vc in df.columns:
            view = vc.split("_")[0]
            canon = df[vc].astype(str).str.strip().str.lower().map(VIEW_CODES)
            cells("view", df[vc].notna() & (canon != view), vc,
                  lambda v, view=view: f"view value {_show(v)} is not a {view.upper()} view code "
                                       f"({', '.join(sorted(VIEW_CODES))})")

    present = {c: ~is_empty(df[c]) for c in PATH_COLUMNS if c in df.columns}
    none = ~present["cc_path"] & ~present["mlo_path"]
    if allow_missing_view:
        idx = np.flatnonzero(none.to_numpy())
        found.add("missing view", rownum[idx], ["columns 'cc_path' and 'mlo_path': both empty (a breast needs "
                                                "at least one view)"] * len(idx))
    else:
        for col in VIEW_PATH_COLUMNS:
            cells("missing view", ~present[col], col, lambda v: f"empty path (missing view; {MISSING_VIEW_HINT})")
    for col in HEATMAP_COLUMNS:
        if col in present:
            view = col.split("_")[0]
            cells("heatmap", present[col] & ~present[f"{view}_path"], col,
                  lambda v, view=view: f"heatmap {_show(v)} given for an absent {view.upper()} view "
                                       f"(empty {view}_path); leave it empty")

    root = df.attrs.get("root", ".")
    for col, has in present.items():
        values = df[col].where(has, "").astype(str).str.strip()
        if check_files:
            uniq = values[has].unique()  # a path listed twice is looked up once
            exists = {v: os.path.exists(v if os.path.isabs(v) else os.path.join(root, v)) for v in uniq}
            cells("file", has & ~values.map(lambda v: exists.get(v, True)).astype(bool), col,
                  lambda v: f"image file not found: {os.path.join(root, str(v).strip())}")
        # Only values with a leading separator / drive or a '..' need the per-value look (str ops are vectorised).
        absolute = has & values.str.match(r"^([/\\]|[A-Za-z]:[/\\])")
        dots = has & ~absolute & values.str.contains("..", regex=False)
        up = np.zeros(len(df), dtype=bool)
        idx = np.flatnonzero(dots.to_numpy(dtype=bool))
        up[idx] = [_escapes(v) for v in values.to_numpy()[idx]]
        cells("absolute path", absolute, col, lambda v: f"absolute path {_show(v)}: the table works only where "
              "that path exists (a relative path would move with the table's folder)", warn=not strict_paths)
        cells("path above the table's folder", up, col, lambda v: f"path {_show(v)} leaves the table's folder "
              "(.. above it)", warn=not strict_paths)

    ids = breast_ids(df).reset_index(drop=True)
    dup = ids.duplicated(keep=False).to_numpy()
    if dup.any():
        # Rows of each duplicated id, ids in order of first appearance (numpy: a pandas group costs ~40 us).
        codes, uniques = pd.factorize(ids[dup])
        order = np.argsort(codes, kind="stable")
        bounds = np.flatnonzero(np.diff(codes[order])) + 1
        for bid, rows in zip(uniques, np.split(rownum[dup][order], bounds)):
            found.errors.append(Problem("duplicate", f"{', '.join(f'row {r}' for r in rows)}, columns "
                                                     f"patient_id/exam_id/side: duplicate breast {bid!r}"))

    if split is not None:
        pid = df["patient_id"].astype(str)
        n_splits = split.groupby(pid, sort=False).nunique()
        if (n_splits.to_numpy() > 1).any():
            bad = pid.map(n_splits).to_numpy() > 1  # (not isin: arrow strings convert a long value list per call)
            sub = pd.DataFrame({"pid": pid, "split": split, "row": rownum})[bad]
            first = sub.groupby("pid", sort=False)["row"].min()
            pairs = sub.drop_duplicates(["pid", "split"]).sort_values(["pid", "split"])
            names: dict = {}  # a dict, not groupby().agg(join): a Python call per group costs ~40 us in pandas
            for p, s in zip(pairs["pid"].to_numpy(), pairs["split"].to_numpy()):
                names.setdefault(p, []).append(s)
            for p, r in first.items():
                found.errors.append(Problem("patient in several splits",
                                            f"row {r}, column 'split': patient {p!r} appears in several splits "
                                            f"({', '.join(names[p])}); splits must be by patient"))
    return found


def _escapes(path: str) -> bool:
    """A relative path that climbs above the folder it is relative to (``../x``, ``a/../../x``)."""
    norm = os.path.normpath(path)
    return norm == os.pardir or norm.startswith(os.pardir + os.sep)


def capped(problems: list, per_kind: int = 50) -> list[str]:
    """The first ``per_kind`` lines of each kind (kinds in order of first appearance), then '... N more'."""
    by_kind: dict = {}
    for p in problems:
        by_kind.setdefault(p.kind, []).append(p.text)
    out: list[str] = []
    for kind, texts in by_kind.items():
        out += texts[:per_kind]
        if len(texts) > per_kind:
            out.append(f"... {len(texts) - per_kind} more '{kind}' problems (all counted; first {per_kind} shown)")
    return out


def counts(problems: list) -> dict:
    out: dict = {}
    for p in problems:
        out[p.kind] = out.get(p.kind, 0) + 1
    return out
