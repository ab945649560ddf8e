"""NYU exam-list pickle (the format of the NYU breast cancer screening code).

A pickled list of dicts, one per exam: 'L-CC', 'R-CC', 'L-MLO', 'R-MLO' -> lists of file stems (no
extension), 'horizontal_flip' ('YES'/'NO'), 'cancer_label' -> {'left_benign', 'right_benign',
'left_malignant', 'right_malignant', ...}. Loaded with the restricted unpickler: no code runs.
Images: <images>/<stem>.png. Heatmaps (optional): <heatmaps>/heatmap_benign/<stem>.hdf5 and
heatmap_malignant/<stem>.hdf5 (the NYU layout). The list has no patient ids: each exam is its own
patient unless a dict carries 'patient_id' (and 'exam_id').
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mvmammo.data import safe_pickle
from mvmammo.data.sources.common import SourceError, SplitOptions, build_table
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


def import_nyu(exam_list: str | Path, images: str | Path | None = None, heatmaps: str | Path | None = None,
               ext: str = ".png", split: SplitOptions | None = None) -> tuple[pd.DataFrame, ImportReport]:
    exam_list = Path(exam_list)
    data = safe_pickle.load(exam_list)
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
    for i, exam in enumerate(data):
        pid = str(exam.get("patient_id", i))
        eid = str(exam.get("exam_id", i))
        for key in VIEW_KEYS:
            side, view = key.split("-")
            stems = exam.get(key) or []
            if isinstance(stems, str):
                stems = [stems]
            for k, stem in enumerate(stems):
                path = images / (stem if Path(stem).suffix else f"{stem}{ext}")
                row = {"patient_id": pid, "exam_id": eid, "side": side, "view": view,
                       "path": str(path.resolve()), "order": len(img_rows)}
                if hroot is not None:
                    row["img_heatmap_benign"] = _heatmap(hroot, "benign", stem)
                    row["img_heatmap_malignant"] = _heatmap(hroot, "malignant", stem)
                img_rows.append(row)
        cl = exam.get("cancer_label")
        if not isinstance(cl, dict):
            report.notes.append(f"exam {i}: no cancer_label; its breasts are dropped as unlabelled")
            continue
        for side, word in (("L", "left"), ("R", "right")):
            try:
                b, m = int(cl[f"{word}_benign"]), int(cl[f"{word}_malignant"])
            except (KeyError, TypeError, ValueError) as exc:
                raise SourceError(f"{exam_list}: exam {i}: cancer_label lacks {word}_benign/{word}_malignant "
                                  f"({exc})") from None
            lab_rows.append({"patient_id": pid, "exam_id": eid, "side": side, "benign": b, "malignant": m,
                             "nyu_horizontal_flip": exam.get("horizontal_flip")})
    if not has_ids:
        report.notes.append("the exam list has no patient ids: each exam is treated as its own patient, so a "
                            "patient with several exams could cross splits (add 'patient_id' to the dicts)")
    if not img_rows:
        raise SourceError(f"{exam_list}: no image entries (keys {VIEW_KEYS})")
    table = build_table(pd.DataFrame(img_rows), pd.DataFrame(lab_rows), report, split or SplitOptions())
    return table, report
