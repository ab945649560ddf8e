"""What every importer shares: per-image records + per-breast labels -> the exam table and its report.

An importer produces two frames and calls :func:`build_table`:

``images``: one row per image file: patient_id, exam_id, side (metadata value, raw), view (metadata value,
raw; may be empty for DICOMs whose tags carry it), path (absolute or None), optional ``problem``
(why the importer could not locate the file) and ``img_<name>`` columns carried per view into the table
as ``cc_<name>`` / ``mlo_<name>`` (e.g. ``img_heatmap_benign`` -> ``cc_heatmap_benign``).

``labels``: one or more rows per breast: patient_id, exam_id, side (L/R), benign, malignant (0/1; rows of
a breast are OR-ed; -1 or an absent column = unknown, for a table to predict on), optional ``split`` (an
official split) and any extra per-breast columns (first value).

A breast with one usable view is dropped (reason ``missing CC view`` ...) unless ``allow_missing_view``:
then it is kept with the other view's path (and heatmaps) empty and listed under ``one_view``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mvmammo.data import exams
from mvmammo.data.csvread import read_csv
from mvmammo.data.sources.report import ImportReport
from mvmammo.data.sources.vocab import VocabError, normalise_side, normalise_view, slot_of
from mvmammo.errors import MvError

KEY = ["patient_id", "exam_id", "side"]
UNKNOWN = exams.UNKNOWN_LABEL
MISSING_VIEW_HINT = "pass --allow-missing-view to keep breasts with one view"


class SourceError(MvError, ValueError):
    """The source files cannot be imported at all (missing column, unreadable sheet...); one line."""


@dataclass
class SplitOptions:
    fractions: tuple = (0.8, 0.1, 0.1)   # train, val, test for sources without an official split
    seed: int = 0
    val_fraction: float = 0.1            # share of official-train patients moved to val


@functools.lru_cache(maxsize=200_000)
def header_info(path: str) -> dict:
    """Tag values an importer needs, read once per file (pixel data skipped)."""
    from mvmammo.data.dicom import read_header, side_view_from_dataset

    ds = read_header(path)
    side, view = side_view_from_dataset(ds)
    return {"side": side, "view": view, "bits": ds.get("BitsStored"), "patient_id": str(ds.get("PatientID", "")),
            "study_uid": str(ds.get("StudyInstanceUID", "")), "series": str(ds.get("SeriesDescription", "")),
            "rows": int(ds.get("Rows", 0) or 0), "cols": int(ds.get("Columns", 0) or 0)}


def require_columns(df: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SourceError(f"{what}: missing column(s) {missing}; found {list(df.columns)}")


def read_sheet(path: str | Path) -> pd.DataFrame:
    """CSV or Excel sheet as strings-where-possible; Excel needs openpyxl (a clear error if absent)."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: file not found")
    if path.suffix.lower() in (".xlsx", ".xls"):
        try:
            return pd.read_excel(path)
        except ImportError as exc:
            raise SourceError(f"{path}: reading Excel needs openpyxl (pip install openpyxl), or save the "
                              "sheet as CSV and pass that") from exc
    try:
        return read_csv(path, sniff=path.suffix.lower() == ".txt")
    except FileNotFoundError as exc:
        raise SourceError(str(exc)) from None


def read_source_csv(path: str | Path, **kwargs) -> pd.DataFrame:
    """A source's CSV (all importers): empty, not UTF-8 or unparsable files fail in one line naming the file."""
    try:
        return read_csv(path, **kwargs)
    except FileNotFoundError as exc:
        raise SourceError(str(exc)) from None


def as01(value) -> int:
    """0/1 from 0/1, True/False, yes/no, floats; NaN -> 0."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return 0
    s = str(value).strip().lower()
    if s in ("1", "1.0", "true", "yes", "y", "t"):
        return 1
    if s in ("0", "0.0", "false", "no", "n", "f", "", "nan"):
        return 0
    raise SourceError(f"label value {value!r} is not 0/1, true/false or yes/no")


def column01(df: pd.DataFrame, column: str, where: str) -> list[int]:
    """:func:`as01` of every cell of a source column; a bad value names the file (``where``), row and column."""
    out = []
    for k, v in enumerate(df[column]):
        try:
            out.append(as01(v))
        except SourceError:
            raise SourceError(f"{where}: row {k + 2}, column {column!r}: value {v!r} is not 0/1, true/false or "
                              "yes/no") from None
    return out


def _label01(value) -> int:
    """A label cell of the labels frame: 0/1 as :func:`as01`, and -1 (unknown) kept."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not pd.isna(value) and float(value) == UNKNOWN:
        return UNKNOWN
    return as01(value)


def assign_splits(patients, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> dict:
    """patient -> train/val/test: a seeded permutation of the sorted unique ids, cut by the fractions."""
    f = np.asarray(fractions, dtype=float)
    if f.shape != (3,) or (f < 0).any() or f.sum() <= 0:
        raise SourceError(f"split fractions {fractions!r}: need three non-negative numbers (train val test)")
    f = f / f.sum()
    ids = sorted({str(p) for p in patients})
    order = np.random.default_rng(seed).permutation(len(ids))
    n_train, n_val = int(round(f[0] * len(ids))), int(round(f[1] * len(ids)))
    out = {}
    for rank, i in enumerate(order):
        out[ids[i]] = "train" if rank < n_train else ("val" if rank < n_train + n_val else "test")
    return out


def _patient_splits(table: pd.DataFrame, opts: SplitOptions, report: ImportReport) -> pd.Series:
    """Official split per patient (any test breast puts the patient in test), else seeded random."""
    pids = table["patient_id"].astype(str)
    if "split" in table.columns and table["split"].notna().all():
        per_patient = table.groupby(pids)["split"].agg(lambda s: "test" if (s == "test").any() else
                                                       ("val" if (s == "val").any() else "train"))
        mixed = table.groupby(pids)["split"].nunique()
        if (mixed > 1).any():
            report.notes.append(f"{int((mixed > 1).sum())} patients had breasts in several official splits; "
                                "moved wholly to the stricter one (test > val > train)")
        mapping = per_patient.to_dict()
        train = [p for p, s in mapping.items() if s == "train"]
        if opts.val_fraction > 0 and train and "val" not in mapping.values():
            moved = assign_splits(train, (1 - opts.val_fraction, opts.val_fraction, 0), opts.seed)
            mapping.update({p: s for p, s in moved.items() if s == "val"})
            report.split_rule += f"; val = {opts.val_fraction:g} of official-train patients (seed {opts.seed})"
        return pids.map(mapping)
    report.split_rule = (f"by patient, seeded ({opts.seed}) permutation, fractions train/val/test "
                         f"{'/'.join(f'{x:g}' for x in opts.fractions)}")
    return pids.map(assign_splits(pids, opts.fractions, opts.seed))


def _resolve_image(row, read_tags: bool, report: ImportReport):
    """(side, view, bits, problem) for one image row; tags first, metadata second."""
    from mvmammo.data.dicom import DicomError, is_dicom

    if isinstance(row.get("problem"), str) and row["problem"]:
        return None, None, None, row["problem"]
    path = row.get("path")
    if not isinstance(path, str) or not path or not Path(path).exists():
        return None, None, None, "image file not found"
    for col in [c for c in row.index if c.startswith("img_heatmap")]:
        hp = row[col]
        if isinstance(hp, str) and hp and not Path(hp).exists():
            return None, None, None, "heatmap file not found"
    meta_side = row.get("side") if pd.notna(row.get("side")) and str(row.get("side")).strip() else None
    meta_view = row.get("view") if pd.notna(row.get("view")) and str(row.get("view")).strip() else None
    tag_side = tag_view = bits = None
    if read_tags and is_dicom(path):
        try:
            info = header_info(str(path))
        except DicomError:
            return None, None, None, "unreadable DICOM"
        tag_side, tag_view, bits = info["side"], info["view"], info["bits"]
    try:
        side = normalise_side(tag_side or meta_side) if (tag_side or meta_side) else None
        view = normalise_view(tag_view or meta_view) if (tag_view or meta_view) else None
        for field_, tag, meta, norm in (("side", tag_side, meta_side, normalise_side),
                                        ("view", tag_view, meta_view, normalise_view)):
            if tag and meta and norm(tag) != norm(meta):
                report.conflicts.append({"path": path, "field": field_, "tag": tag, "metadata": meta})
    except VocabError as exc:
        return None, None, None, str(exc)
    if side is None:
        return None, None, None, "no laterality (no tag, no metadata)"
    if view is None:
        return None, None, None, "no view (no tag, no metadata)"
    return side, view, bits, None


def _meta_side(value):
    try:
        return normalise_side(value)
    except (VocabError, TypeError):
        return None


def build_table(images: pd.DataFrame, labels: pd.DataFrame, report: ImportReport, split: SplitOptions,
                read_tags: bool = True, allow_missing_view: bool = False) -> pd.DataFrame:
    """The exam table (one row per breast) from per-image rows and per-breast labels; fills ``report``."""
    images = images.reset_index(drop=True).copy()
    labels = labels.copy()
    for c in KEY:  # an importer with no label rows at all passes an empty frame
        if c not in labels.columns:
            labels[c] = pd.Series(dtype=object)
    for c in ("benign", "malignant"):
        if c not in labels.columns:  # a source without this label: unknown for every breast
            labels[c] = UNKNOWN
    for c in ("patient_id", "exam_id"):
        images[c] = images[c].astype(str)
        labels[c] = labels[c].astype(str)
    if "order" not in images.columns:
        images["order"] = np.arange(len(images))
    images["path"] = images["path"].where(images["path"].notna(), None)
    # Exact duplicate rows (same image listed twice) collapse to one, counted in the report.
    dup_key = ["patient_id", "exam_id", "side", "view", "path"]
    dups = images.astype({c: str for c in dup_key}).duplicated(subset=dup_key)
    report.duplicate_rows += int(dups.sum())
    images = images[~dups].reset_index(drop=True)
    # The same file listed with a different side/view cannot be trusted either way.
    multi = images["path"].notna() & images["path"].duplicated(keep=False)
    for i in images.index[multi]:
        images.loc[i, "problem"] = "conflicting duplicate rows (same file, different side/view)"

    # Records, not DataFrame columns: pandas would turn the None of "no problem" into NaN.
    records = []
    for _, r in images.iterrows():
        side, view, bits, problem = _resolve_image(r, read_tags, report)
        rec = r.to_dict()
        rec.update(r_side=side, r_view=view, r_bits=bits, r_problem=problem)
        rec["breast_side"] = side or _meta_side(rec.get("side"))
        records.append(rec)
    records.sort(key=lambda d: d["order"])

    img_cols = [c for c in images.columns if c.startswith("img_")]
    per_breast: dict = {}
    unattributed: dict = {}  # (patient, exam) -> problems of images whose side is unknown
    for r in records:
        if r["r_problem"]:
            report.image_problems.append({"path": r["path"], "reason": r["r_problem"],
                                          "breast": f"{r['patient_id']}/{r['exam_id']}/{r['breast_side']}"})
        if r["breast_side"] is None:
            unattributed.setdefault((r["patient_id"], r["exam_id"]), []).append(f"{r['path']}: {r['r_problem']}")
            continue
        per_breast.setdefault((r["patient_id"], r["exam_id"], r["breast_side"]), []).append(r)

    labels["side_n"] = [_meta_side(s) for s in labels["side"]]
    for _, r in labels[labels["side_n"].isna()].iterrows():
        report.drop(f"{r['patient_id']}/{r['exam_id']}/{r['side']}", "unknown laterality in labels",
                    f"side value {r['side']!r}")
    labels = labels[labels["side_n"].notna()].assign(side=lambda d: d["side_n"]).drop(columns="side_n")
    for c in ("benign", "malignant"):
        labels[c] = [_label01(v) for v in labels[c]]
    extra = [c for c in labels.columns if c not in KEY + ["benign", "malignant"]]
    agg = {"benign": "max", "malignant": "max", **{c: "first" for c in extra}}
    lab = labels.groupby(KEY, sort=False).agg(agg) if len(labels) else None

    rows = []
    keys = list(per_breast) + [k for k in (lab.index if lab is not None else []) if k not in per_breast]
    for key in keys:
        name = "/".join(key)
        imgs = per_breast.get(key, [])
        if lab is None or key not in lab.index:
            report.drop(name, "no label", "breast has images but no label row in the source")
            continue
        if not imgs:
            report.drop(name, "no images", "labelled breast has no image rows")
            continue
        chosen, problems = {}, []
        for r in imgs:
            if r["r_problem"]:
                problems.append(r)
                continue
            slot = slot_of(r["r_view"])
            if slot is None:
                report.extra_images.append({"breast": name, "view": r["r_view"], "path": r["path"],
                                            "reason": f"view {r['r_view']} is not used"})
            elif slot[0] not in chosen or slot[1] < chosen[slot[0]]["rank"]:
                if slot[0] in chosen:
                    old = chosen[slot[0]]["row"]
                    report.extra_images.append({"breast": name, "view": old["r_view"], "path": old["path"],
                                                "reason": f"{r['r_view']} preferred over {old['r_view']}"})
                chosen[slot[0]] = {"row": r, "rank": slot[1]}
            else:
                report.extra_images.append({"breast": name, "view": r["r_view"], "path": r["path"],
                                            "reason": f"extra {slot[0].upper()} image; kept "
                                                      f"{chosen[slot[0]]['row']['path']}"})
        missing = [s for s in ("cc", "mlo") if s not in chosen]
        if problems:
            p = problems[0]
            why, detail = (f"{'/'.join(m.upper() for m in missing)} image unusable: {p['r_problem']}",
                           f"{p['path']}: {p['r_problem']}")
        else:
            other = unattributed.get(key[:2], [])
            why, detail = (f"missing {' and '.join(m.upper() for m in missing)} view",
                           "views found: " + (", ".join(str(r["r_view"]) for r in imgs) or "none")
                           + (f"; images of this exam with no usable side: {'; '.join(other)}" if other else ""))
        if missing and (len(missing) == 2 or not allow_missing_view):
            hint = f"; {MISSING_VIEW_HINT}" if len(missing) == 1 else ""
            report.drop(name, why.split(" (")[0], detail + hint)
            continue
        if missing:
            report.one_view.append({"breast": name, "missing": missing[0], "reason": why.split(" (")[0],
                                    "detail": detail})
        out = dict(zip(KEY, key))
        for slot in ("cc", "mlo"):
            if slot not in chosen:  # one-view breast: the absent view's path and heatmaps stay empty
                out[f"{slot}_path"] = None
                continue
            r = chosen[slot]["row"]
            out[f"{slot}_path"] = r["path"]
            out[f"{slot}_view"] = r["r_view"].lower()
            out[f"{slot}_view_raw"] = r["view"] if pd.notna(r["view"]) and str(r["view"]).strip() else r["r_view"]
            if pd.notna(r["r_bits"]):
                out[f"{slot}_bits_stored"] = int(r["r_bits"])
            for c in img_cols:
                out[f"{slot}_{c[4:]}"] = r[c]
        out.update(lab.loc[key].to_dict())
        rows.append(out)

    table = pd.DataFrame(rows)
    if len(table) == 0:
        report.kept = 0
        return table
    table["split"] = _patient_splits(table, split, report)
    first = list(exams.REQUIRED_COLUMNS)
    table = table[first + [c for c in table.columns if c not in first]]
    report.kept = len(table)
    report.patients = int(table["patient_id"].nunique())
    report.exams = int(table[["patient_id", "exam_id"]].drop_duplicates().shape[0])
    report.benign = int((table["benign"] == 1).sum())
    report.malignant = int((table["malignant"] == 1).sum())
    report.both = int(((table["benign"] == 1) & (table["malignant"] == 1)).sum())
    report.unlabelled = int((~table["benign"].isin([0, 1]) | ~table["malignant"].isin([0, 1])).sum())
    if report.unlabelled:
        report.notes.append(f"{report.unlabelled} breasts have unknown labels (-1): the table is for `mvmammo "
                            "predict` (validate with --no-labels); train and evaluate need 0/1 labels")
    report.by_split = {s: int((table["split"] == s).sum()) for s in exams.SPLITS}
    return table


def write_outputs(table: pd.DataFrame, report: ImportReport, out: str | Path,
                  allow_missing_view: bool = False) -> Path:
    """Validate, write the table and the JSON report next to it; returns the report path."""
    from mvmammo.data.sources.report import report_path

    rp = report_path(out)
    ann = report.annotations
    if ann is not None and len(table):
        from mvmammo.data.annotations import annotation_path, for_table

        ann, left_out = for_table(ann, table)
        report.annotations = ann
        report.notes.append(f"annotation table: {len(ann)} lesion outline(s) in {annotation_path(out).name}"
                            + (f" ({left_out} on images or breasts not in the exam table left out)" if left_out
                               else "") + "; `mvmammo patches extract` reads it")
    report.write(rp)
    if len(table) == 0:
        hint = (f"; {MISSING_VIEW_HINT}" if not allow_missing_view and
                any(MISSING_VIEW_HINT in d["detail"] for d in report.dropped) else "")
        raise SourceError(f"no breast kept; reasons: {report.dropped_by_reason()} (report: {rp}){hint}")
    problems = exams.validate(table, check_files=True, allow_missing_view=allow_missing_view, require_labels=False)
    if problems:  # an importer bug, not a user error: say so loudly
        raise SourceError(f"the imported table does not pass validation ({len(problems)} problems; please "
                          f"report this): " + "; ".join(problems[:3]))
    exams.write_table(table, out)
    if ann is not None:
        from mvmammo.data.annotations import write_annotations

        write_annotations(ann, out)
    return rp
