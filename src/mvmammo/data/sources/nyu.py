"""NYU exam-list pickle (the format of the NYU breast cancer screening code).

A pickled list of dicts, one per exam: 'L-CC', 'R-CC', 'L-MLO', 'R-MLO' -> lists of file stems (no
extension), 'horizontal_flip' ('YES'/'NO'), 'cancer_label' -> {'left_benign', 'right_benign',
'left_malignant', 'right_malignant', ...}. Loaded with the restricted unpickler: no code runs.
Images: <images>/<stem>.png. Heatmaps (optional): <heatmaps>/heatmap_benign/<stem>.hdf5 and
heatmap_malignant/<stem>.hdf5 (the NYU layout). The list has no patient ids: each exam is its own
patient unless a dict carries 'patient_id' (and 'exam_id').

Labels are optional: a list where no exam has 'cancer_label' (NYU's own sample list) imports with labels
-1 (unknown), a table for ``mvmammo predict``; where only some exams have one, the others are dropped as
unlabelled. A label value other than 0/1 is an error naming the exam and the key.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import pandas as pd

from mvmammo.data import safe_pickle
from mvmammo.data.sources.common import UNKNOWN, SourceError, SplitOptions, build_table
from mvmammo.data.sources.report import ImportReport

VIEW_KEYS = ("L-CC", "R-CC", "L-MLO", "R-MLO")
LABEL_RULE = "cancer_label left/right_benign and left/right_malignant of the exam list, per side"


def _heatmap(root: Path | None, kind: str, stem: str) -> str | None:
    if root is None:
        return None
    for ext in (".hdf5", ".h5", ".png"):
        p = root / f"heatmap_{kind}" / f"{stem}{ext}"
        if p.exists():
            return str(p.resolve())
    return str((root / f"heatmap_{kind}" / f"{stem}.hdf5").resolve())  # reported as not found


def _label(exam_list: Path, i: int, cl: dict, key: str) -> int:
    """cancer_label[key] as 0/1 (ints, bools, 0.0/1.0, '0'/'1'); anything else names the exam and the key."""
    if key not in cl:
        raise SourceError(f"{exam_list}: exam {i}: cancer_label lacks {key!r} (has {sorted(map(str, cl))}); "
                          "each labelled exam needs left/right_benign and left/right_malignant")
    v = cl[key]
    try:
        f = float(v)
    except (TypeError, ValueError):
        f = None
    if f not in (0.0, 1.0):
        raise SourceError(f"{exam_list}: exam {i}: cancer_label[{key!r}] = {v!r} is not 0 or 1")
    return int(f)


def _stems(exam_list: Path, i: int, exam: dict, key: str) -> list[str]:
    stems = exam.get(key) or []
    stems = [stems] if isinstance(stems, str) else stems
    if not isinstance(stems, (list, tuple)) or not all(isinstance(x, str) for x in stems):
        raise SourceError(f"{exam_list}: exam {i}: {key!r} should be a list of file stems, found {stems!r}")
    return list(stems)


def import_nyu(exam_list: str | Path, images: str | Path | None = None, heatmaps: str | Path | None = None,
               ext: str = ".png", split: SplitOptions | None = None,
               allow_missing_view: bool = False) -> tuple[pd.DataFrame, ImportReport]:
    exam_list = Path(exam_list)
    if not exam_list.is_file():
        raise SourceError(f"{exam_list}: exam list not found")
    try:
        data = safe_pickle.load(exam_list)
    except safe_pickle.UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError) as exc:
        msg = str(exc) if str(exc).startswith(str(exam_list)) else f"{exam_list}: not a readable pickle ({exc})"
        raise SourceError(f"{msg}; expected an NYU exam list (a pickled list of exam dicts)") from None
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise SourceError(f"{exam_list}: expected a list of exam dicts, found {type(data).__name__}")
    if images is None:
        images = exam_list.parent / "images" if (exam_list.parent / "images").is_dir() else exam_list.parent
    images = Path(images)
    hroot = Path(heatmaps) if heatmaps else None
    report = ImportReport("nyu", inputs={"exam_list": str(exam_list), "images": str(images),
                                         "heatmaps": str(hroot) if hroot else None},
                          label_rule=LABEL_RULE, order_rule="order of the file stems in each view list")
    img_rows, lab_rows = [], []
    has_ids = any("patient_id" in e for e in data)
    any_labels = any("cancer_label" in e for e in data)
    for i, exam in enumerate(data):
        pid = str(exam.get("patient_id", i))
        eid = str(exam.get("exam_id", i))
        for key in VIEW_KEYS:
            side, view = key.split("-")
            for stem in _stems(exam_list, i, exam, key):
                path = images / (stem if Path(stem).suffix else f"{stem}{ext}")
                row = {"patient_id": pid, "exam_id": eid, "side": side, "view": view,
                       "path": str(path.resolve()), "order": len(img_rows)}
                if hroot is not None:
                    row["img_heatmap_benign"] = _heatmap(hroot, "benign", stem)
                    row["img_heatmap_malignant"] = _heatmap(hroot, "malignant", stem)
                img_rows.append(row)
        cl = exam.get("cancer_label")
        if not any_labels:
            cl = {}
        elif not isinstance(cl, dict):
            report.notes.append(f"exam {i}: no cancer_label; its breasts are dropped as unlabelled")
            continue
        for side, word in (("L", "left"), ("R", "right")):
            b, m = ((_label(exam_list, i, cl, f"{word}_benign"), _label(exam_list, i, cl, f"{word}_malignant"))
                    if any_labels else (UNKNOWN, UNKNOWN))
            lab_rows.append({"patient_id": pid, "exam_id": eid, "side": side, "benign": b, "malignant": m,
                             "nyu_horizontal_flip": exam.get("horizontal_flip")})
    if not has_ids:
        report.notes.append("the exam list has no patient ids: each exam is treated as its own patient, so a "
                            "patient with several exams could cross splits (add 'patient_id' to the dicts)")
    if not any_labels:
        report.label_rule = "none: the exam list has no cancer_label; labels are -1 (unknown)"
    if not img_rows:
        raise SourceError(f"{exam_list}: no image entries (keys {VIEW_KEYS})")
    table = build_table(pd.DataFrame(img_rows), pd.DataFrame(lab_rows), report, split or SplitOptions(),
                        allow_missing_view=allow_missing_view)
    return table, report
