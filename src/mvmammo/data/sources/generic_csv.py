"""Any CSV with a column mapping: ``--map patient_id=PID --map side=Lat ...``.

Two layouts:
- per image (one row per image file): patient_id, side, view, path (+ optional exam_id, benign, malignant, split);
- per breast (one row per breast): patient_id, side, cc_path and/or mlo_path (+ the same optional fields).
The layout is detected: a mapped or present ``cc_path`` / ``mlo_path`` column means per breast, else per
image (``layout`` forces one). A field whose column already has the
field's name needs no ``--map``. Labels of a breast are OR-ed over its rows (0/1, true/false, yes/no; an
empty cell is 0). A label column that is absent (and not mapped) makes that label -1 (unknown) for every
breast: a table to predict on. Relative paths are relative to ``root`` (default: the CSV's folder). Without
exam_id, exam = patient. A ``split`` column is used as the official split; otherwise random by patient.
Unmapped columns are kept (first value per breast).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from mvmammo.data.sources.common import SourceError, SplitOptions, build_table, column01, read_source_csv
from mvmammo.data.sources.report import ImportReport

BASE = ("patient_id", "side")
LAYOUT_FIELDS = {"image": ("view", "path"), "breast": ("cc_path", "mlo_path")}
OPTIONAL = ("exam_id", "benign", "malignant", "split")
LAYOUTS = ("auto", "image", "breast")

FIELDS_HELP = """\
fields (FIELD=COLUMN with --map; a column already named like the field needs no --map):
  patient_id   required  patient identifier (splits are by patient)
  side         required  laterality: L/R, left/right
  exam_id      optional  visit identifier (default: the patient id; one exam per patient)
  benign       optional  0/1, true/false, yes/no; absent = -1 (unknown, a table to predict on)
  malignant    optional  as benign
  split        optional  train/val/test, used as given (default: random by patient, --split-fractions)

layouts (detected from the columns; --layout to force):
  per image    one row per image file: patient_id, side, view (CC, MLO, ML, XCCL, ...), path
               e.g.  patient_id,side,view,path,malignant
                     p1,L,CC,img/p1_lcc.png,0
  per breast   one row per breast: patient_id, side, cc_path, mlo_path
               e.g.  patient_id,side,cc_path,mlo_path,malignant
                     p1,L,img/p1_lcc.png,img/p1_lmlo.png,0
  A breast needs one CC and one MLO image; with --allow-missing-view one of them may be missing.
  Relative paths start from --root (default: the CSV's folder). Other columns are kept (first value per breast).
"""


def parse_mapping(items) -> dict:
    """['patient_id=PID', ...] -> {'patient_id': 'PID', ...}."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SourceError(f"--map {item!r}: expected FIELD=COLUMN")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def detect_layout(csv: Path, columns, mapping: dict, layout: str = "auto") -> str:
    """'image' or 'breast': forced, else from the mapped fields, else from the column names."""
    if layout not in LAYOUTS:
        raise SourceError(f"--layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    if layout != "auto":
        return layout
    mapped = {k for k, fields in LAYOUT_FIELDS.items() if set(fields) & set(mapping)}
    if len(mapped) == 1:
        return mapped.pop()
    if len(mapped) == 2:
        raise SourceError("--map names fields of both layouts (view/path and cc_path/mlo_path); map one layout")
    cols = set(columns)
    breast = bool({"cc_path", "mlo_path"} & cols)
    image = {"view", "path"} <= cols
    if breast and image:
        raise SourceError(f"{csv}: has columns of both layouts (view, path and cc_path/mlo_path); pass "
                          "--layout image or --layout breast")
    # Neither: per image, whose missing view/path columns are then reported with the other missing fields.
    return "breast" if breast else "image"


def import_csv(csv: str | Path, mapping: dict, root: str | Path | None = None,
               split: SplitOptions | None = None, *, layout: str = "auto",
               allow_missing_view: bool = False) -> tuple[pd.DataFrame, ImportReport]:
    csv = Path(csv)
    df = read_source_csv(csv, dtype=str)
    if len(df) == 0:
        raise SourceError(f"{csv}: header only, no rows")
    root = Path(root) if root else csv.parent
    layout = detect_layout(csv, df.columns, mapping, layout)
    view_fields = LAYOUT_FIELDS[layout]
    known = set(BASE) | set(view_fields) | set(OPTIONAL)
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise SourceError(f"--map: unknown field(s) {unknown} for the per-{layout} layout; fields are "
                          f"{sorted(known)}")
    cols = {f: mapping.get(f, f) for f in sorted(known)}
    # Required: the base fields, the per-image pair, one of the per-breast pair; and anything mapped explicitly.
    needed = list(BASE) + (list(view_fields) if layout == "image" else []) + [f for f in mapping if f in known]
    missing = [f"{f} (column {cols[f]!r})" for f in dict.fromkeys(needed) if cols[f] not in df.columns]
    if layout == "breast" and not any(cols[f] in df.columns for f in view_fields):
        missing.append(f"cc_path or mlo_path (columns {cols['cc_path']!r}, {cols['mlo_path']!r})")
    if missing:
        raise SourceError(f"{csv}: missing {', '.join(missing)} for one row per {layout}; columns are "
                          f"{list(df.columns)}; map them with --map FIELD=COLUMN (fields and layouts: mvmammo import "
                          "csv --help)")
    has = {f: cols[f] in df.columns for f in cols}
    for k, v in enumerate(df[cols["patient_id"]]):
        if pd.isna(v) or not str(v).strip():
            raise SourceError(f"{csv}: row {k + 2}, column {cols['patient_id']!r}: empty patient id")
    labels_given = [f for f in ("benign", "malignant") if has[f]]
    report = ImportReport("csv", inputs={"csv": str(csv), "root": str(root), "mapping": cols, "layout": layout},
                          label_rule=("mapped " + " / ".join(labels_given) + " column(s), OR over the rows of a breast"
                                      if labels_given else "none: no benign/malignant column; labels are -1 (unknown)"))
    absent = [f"{f} (column {cols[f]!r})" for f in ("benign", "malignant") if not has[f]]
    if absent:
        report.notes.append(f"no {' and no '.join(absent)} in the CSV: -1 (unknown) for every breast; the table is "
                            "for `mvmammo predict`; add the column (or --map it) to train or evaluate")
    label01 = {f: column01(df, cols[f], str(csv)) for f in labels_given}  # bad values name their row

    def abspath(v):
        if v is None or pd.isna(v) or not str(v).strip():
            return None
        p = Path(str(v).strip())
        return str((p if p.is_absolute() else root / p).resolve())

    def get(r, f):
        return r[cols[f]] if has[f] else None

    img_rows, lab_rows = [], []
    used = {cols[f] for f in cols if has[f]}
    rest = [c for c in df.columns if c not in used]
    for k, r in enumerate(df.to_dict("records")):
        pid = str(get(r, "patient_id")).strip()
        eid = str(get(r, "exam_id")).strip() if has["exam_id"] and pd.notna(get(r, "exam_id")) else pid
        views = [("CC", get(r, "cc_path")), ("MLO", get(r, "mlo_path"))] if layout == "breast" else \
            [(get(r, "view"), get(r, "path"))]
        for view, path in views:
            if layout == "breast" and abspath(path) is None:
                continue  # no image of this view: the breast misses it (dropped, or kept with the flag)
            img_rows.append({"patient_id": pid, "exam_id": eid, "side": get(r, "side"), "view": view,
                             "path": abspath(path), "order": len(img_rows),
                             "problem": None if abspath(path) else f"row {k + 2}: empty path"})
        lab = {"patient_id": pid, "exam_id": eid, "side": get(r, "side"),
               **{f: label01[f][k] for f in labels_given}, **{c: r[c] for c in rest}}
        if has["split"]:
            lab["split"] = str(get(r, "split")).strip().lower()
        lab_rows.append(lab)
    labels = pd.DataFrame(lab_rows)
    if "split" in labels.columns:
        bad = labels.index[~labels["split"].isin(["train", "val", "test"])]
        if len(bad):
            raise SourceError(f"{csv}: row {bad[0] + 2}, column {cols['split']!r}: split value "
                              f"{df[cols['split']].iloc[bad[0]]!r} is not train/val/test ({len(bad)} such rows)")
        report.split_rule = "the mapped split column (used as given; no val carved out)"
        split = dataclasses.replace(split or SplitOptions(), val_fraction=0.0)
    if not img_rows:
        raise SourceError(f"{csv}: no image paths in any row")
    table = build_table(pd.DataFrame(img_rows), labels, report, split or SplitOptions(),
                        allow_missing_view=allow_missing_view)
    return table, report
