"""Any CSV with a column mapping: ``--map patient_id=PID --map side=Lat ...``.

Two layouts, chosen by the mapping:
- per image: patient_id, side, view, path, benign, malignant (+ optional exam_id, split);
- per breast: patient_id, side, cc_path, mlo_path, benign, malignant (+ optional exam_id, split).
Labels of a breast are OR-ed over its rows (0/1, true/false, yes/no). Relative paths are relative to
``root`` (default: the CSV's folder). Without exam_id, exam = patient. A mapped ``split`` is used as the
official split; otherwise random by patient. Unmapped columns are kept (first value per breast).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from mvmammo.data.sources.common import SourceError, SplitOptions, build_table
from mvmammo.data.sources.report import ImportReport

BASE = ("patient_id", "side", "benign", "malignant")
OPTIONAL = ("exam_id", "split")


def parse_mapping(items) -> dict:
    """['patient_id=PID', ...] -> {'patient_id': 'PID', ...}."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SourceError(f"--map {item!r}: expected FIELD=COLUMN")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def import_csv(csv: str | Path, mapping: dict, root: str | Path | None = None,
               split: SplitOptions | None = None) -> tuple[pd.DataFrame, ImportReport]:
    csv = Path(csv)
    df = pd.read_csv(csv, dtype=str)
    root = Path(root) if root else csv.parent
    per_breast = "cc_path" in mapping or "mlo_path" in mapping
    needed = BASE + (("cc_path", "mlo_path") if per_breast else ("view", "path"))
    known = set(needed) | set(OPTIONAL)
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise SourceError(f"--map: unknown field(s) {unknown}; fields are {sorted(known)}")
    cols = {f: mapping.get(f, f) for f in needed + OPTIONAL}
    missing = [f"{f} (column {cols[f]!r})" for f in needed if cols[f] not in df.columns]
    if missing:
        raise SourceError(f"{csv}: missing {', '.join(missing)}; columns are {list(df.columns)}; "
                          "map them with --map FIELD=COLUMN")
    get = lambda r, f: r[cols[f]] if cols[f] in df.columns else None  # noqa: E731
    report = ImportReport("csv", inputs={"csv": str(csv), "root": str(root), "mapping": cols},
                          label_rule="mapped benign / malignant columns, OR over the rows of a breast")

    def abspath(v):
        if v is None or pd.isna(v) or not str(v).strip():
            return None
        p = Path(str(v).strip())
        return str((p if p.is_absolute() else root / p).resolve())

    img_rows, lab_rows = [], []
    rest = [c for c in df.columns if c not in {cols[f] for f in needed + OPTIONAL}]
    for k, r in df.iterrows():
        pid = get(r, "patient_id")
        eid = get(r, "exam_id") if cols["exam_id"] in df.columns else pid
        views = [("CC", get(r, "cc_path")), ("MLO", get(r, "mlo_path"))] if per_breast else \
            [(get(r, "view"), get(r, "path"))]
        for view, path in views:
            img_rows.append({"patient_id": pid, "exam_id": eid, "side": get(r, "side"), "view": view,
                             "path": abspath(path), "order": len(img_rows),
                             "problem": None if abspath(path) else "empty path"})
        lab = {"patient_id": pid, "exam_id": eid, "side": get(r, "side"), "benign": get(r, "benign"),
               "malignant": get(r, "malignant"), **{c: r[c] for c in rest}}
        if cols["split"] in df.columns:
            lab["split"] = str(get(r, "split")).strip().lower()
        lab_rows.append(lab)
    labels = pd.DataFrame(lab_rows)
    if "split" in labels.columns:
        bad = sorted(set(labels["split"]) - {"train", "val", "test"})
        if bad:
            raise SourceError(f"{csv}: split values {bad} are not train/val/test")
        report.split_rule = "the mapped split column (used as given; no val carved out)"
        split = dataclasses.replace(split or SplitOptions(), val_fraction=0.0)
    table = build_table(pd.DataFrame(img_rows), labels, report, split or SplitOptions())
    return table, report
