"""CMMD (The Chinese Mammography Database, TCIA): clinical sheet + DICOM tags.

Clinical sheet (``CMMD_clinicaldata_revision.xlsx`` or a CSV export): ID1, LeftRight, Age, number,
abnormality, classification, subtype; one row per labelled breast. classification Benign -> (1, 0),
Malignant -> (0, 1). Images: every *.dcm under the images root (or, with the TCIA ``metadata.csv``, the
folders its ``File Location`` names, patient = ``Subject ID``). Patient from the PatientID tag (else the
first folder under the root); laterality from ImageLaterality and view from ViewCodeSequence -- never
from the file order 1-1..1-4. Breasts imaged but absent from the sheet (the D2 contralateral breasts)
are dropped as unlabelled, or kept as (0, 0) with ``unlabelled_as_normal``. One exam per patient.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from mvmammo.data.dicom import DicomError
from mvmammo.data.sources.common import (SourceError, SplitOptions, build_table, header_info, read_sheet,
                                         read_source_csv, require_columns)
from mvmammo.data.sources.report import ImportReport

CLASSES = {"benign": (1, 0), "malignant": (0, 1)}


def _dicoms(root: Path, metadata: str | Path | None) -> list[tuple[str, Path]]:
    """(patient from metadata or None, file) for every DICOM to import."""
    if metadata is None:
        return [(None, p) for p in sorted(root.rglob("*.dcm"))]
    meta = read_source_csv(metadata, dtype=str)
    require_columns(meta, ["Subject ID", "File Location"], str(metadata))
    out = []
    for pid, loc in zip(meta["Subject ID"], meta["File Location"]):
        rel = str(loc).replace("\\", "/").lstrip("./")
        folder = next((c for c in (root / rel, Path(metadata).parent / rel,
                                   root / "/".join(rel.split("/")[1:])) if c.is_dir()), None)
        out += [(pid, p) for p in sorted(folder.rglob("*.dcm"))] if folder else []
    return out


def import_cmmd(clinical: str | Path, images: str | Path, metadata: str | Path | None = None,
                unlabelled_as_normal: bool = False,
                split: SplitOptions | None = None,
                allow_missing_view: bool = False) -> tuple[pd.DataFrame, ImportReport]:
    root = Path(images)
    sheet = read_sheet(clinical)
    require_columns(sheet, ["ID1", "LeftRight", "classification"], str(clinical))
    if len(sheet) == 0:
        raise SourceError(f"{clinical}: no rows (header only)")
    if not root.is_dir():
        raise SourceError(f"{root}: image folder not found")
    report = ImportReport("cmmd", inputs={"clinical": str(clinical), "images": str(root),
                                          "metadata": str(metadata) if metadata else None},
                          label_rule="classification Benign -> benign, Malignant -> malignant (one per breast)"
                          + ("; imaged breasts missing from the sheet kept as (0, 0)" if unlabelled_as_normal
                             else "; imaged breasts missing from the sheet dropped"),
                          order_rule="file path order within a patient")
    lab_rows = []
    for k, r in sheet.iterrows():
        cls = CLASSES.get(str(r["classification"]).strip().lower())
        if cls is None:
            raise SourceError(f"{clinical}: row {k + 2}, ID1 {r['ID1']}: unknown classification "
                              f"{r['classification']!r} "
                              "(expected Benign or Malignant)")
        extra = {c.lower(): r[c] for c in ("Age", "abnormality", "subtype", "number") if c in sheet.columns}
        lab_rows.append({"patient_id": str(r["ID1"]).strip(), "exam_id": str(r["ID1"]).strip(),
                         "side": r["LeftRight"], "benign": cls[0], "malignant": cls[1], **extra})
    img_rows = []
    for k, (meta_pid, p) in enumerate(_dicoms(root, metadata)):
        try:
            pid = meta_pid or header_info(str(p))["patient_id"]
        except DicomError as exc:
            report.image_problems.append({"path": str(p), "reason": "unreadable DICOM", "breast": None,
                                          "detail": str(exc)})
            continue
        if not pid:
            pid = p.relative_to(root).parts[0]
        img_rows.append({"patient_id": pid, "exam_id": pid, "side": None, "view": None,
                         "path": str(p.resolve()), "order": k})
    if not img_rows:
        raise SourceError(f"{root}: no DICOM files found")
    labels = pd.DataFrame(lab_rows)
    if unlabelled_as_normal:
        # (0, 0) rows for imaged breasts the sheet does not list; side from the tag (cached header read).
        known = {(p, str(s).strip().upper()[:1]) for p, s in zip(labels["patient_id"], labels["side"])}
        extra = []
        for r in img_rows:
            side = str(header_info(r["path"])["side"] or "").strip().upper()[:1]
            if side in ("L", "R") and (r["patient_id"], side) not in known:
                known.add((r["patient_id"], side))
                extra.append({"patient_id": r["patient_id"], "exam_id": r["exam_id"], "side": side,
                              "benign": 0, "malignant": 0})
        labels = pd.concat([labels, pd.DataFrame(extra)], ignore_index=True) if extra else labels
    table = build_table(pd.DataFrame(img_rows), labels, report, split or SplitOptions(),
                        allow_missing_view=allow_missing_view)
    return table, report
