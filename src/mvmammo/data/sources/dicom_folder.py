"""A folder of DICOM files -> an exam table (one row per breast, no labels, no split) and a skipped-files list.

Only headers are read (pixel data skipped). Grouping: patient (PatientID) / study (StudyInstanceUID) /
laterality (ImageLaterality, else Laterality, else an unambiguous L/R/LEFT/RIGHT token of the file name,
noted) / view slot (ViewPosition, else the ViewCodeSequence meaning or code: CC or XCCL fill the CC slot,
MLO or ML the MLO slot, best first). Per slot one image is used: a "FOR PRESENTATION" image before one
without PresentationIntentType before a "FOR PROCESSING" one, then the better view code, then the path.
Every other file is listed with its reason: not DICOM / unreadable, not MG, multi-frame, no or unknown
laterality or view, a view that fills no slot, duplicate (same SOPInstanceUID, or a second image of a slot).

CBIS-DDSM writes the view into PatientID ("Mass-Test_P_00173_LEFT_CC") and gives every image its own study
UID; such ids are cut to the patient part and grouped by StudyDate instead (noted on the breast).
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd

from mvmammo.data.dicom import side_view_from_dataset
from mvmammo.data.sources.vocab import VocabError, normalise_side, normalise_view, slot_of

_TAGS = ["Modality", "PatientID", "StudyInstanceUID", "StudyDate", "SOPInstanceUID", "ImageLaterality",
         "Laterality", "ViewPosition", "ViewCodeSequence", "PatientOrientation", "PresentationIntentType",
         "NumberOfFrames", "Rows", "Columns", "BitsAllocated", "SamplesPerPixel"]
_CBIS_ID = re.compile(r"^(?P<patient>.+?)_(LEFT|RIGHT)_(CC|MLO)$", re.IGNORECASE)
_INTENT_RANK = {"FOR PRESENTATION": 0, "": 1, "FOR PROCESSING": 2}
SKIPPED_COLUMNS = ("file", "reason")


def _side_from_name(path: Path) -> str | None:
    """L/R from the file name's tokens when exactly one side token is there (e.g. 'L_CC.dcm', 'right-mlo')."""
    tokens = re.split(r"[^A-Za-z]+", path.stem.upper())
    found = {normalise_side(t) for t in tokens if t in ("L", "R", "LEFT", "RIGHT")}
    found |= {t[0] for t in tokens if t in ("LCC", "RCC", "LMLO", "RMLO")}
    return found.pop() if len(found) == 1 else None


def _read(path: Path):
    """(dataset, None) or (None, reason)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_TAGS), None
    except InvalidDicomError:
        return None, "not DICOM (no DICM marker)"
    except Exception as exc:  # truncated or corrupt files raise EOFError, OSError, struct/value errors
        return None, f"unreadable DICOM ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"


def _truncated(path: Path, ds) -> str | None:
    """Why a file is cut short, from its header alone: no elements at all, or (uncompressed pixel data) fewer
    bytes than rows x columns x bytes per pixel. pydicom reads a truncated header without complaint."""
    if "SOPInstanceUID" not in ds and "Modality" not in ds:
        return "unreadable DICOM (no SOPInstanceUID or Modality: truncated or corrupt)"
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is None or getattr(ts, "is_compressed", True) or "Rows" not in ds or "Columns" not in ds:
        return None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    need = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * frames \
        * max(1, int(ds.get("BitsAllocated", 16) or 16) // 8)
    size = path.stat().st_size
    if size < need:
        return f"unreadable DICOM (truncated: {size} bytes, the pixel data alone needs {need})"
    return None


def _image_record(path: Path) -> tuple[dict | None, str | None]:
    """The grouping keys of one file, or (None, reason it is skipped)."""
    ds, problem = _read(path)
    if ds is None:
        return None, problem
    problem = _truncated(path, ds)
    if problem:
        return None, problem
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality != "MG":
        return None, f"not a mammogram (Modality {modality or 'empty'}, not MG)"
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        return None, f"multi-frame image ({frames} frames, tomosynthesis?); only 2-D mammograms are used"
    notes = []
    raw_side, raw_view = side_view_from_dataset(ds)
    if not raw_side:
        raw_side = _side_from_name(path)
        if raw_side:
            notes.append(f"laterality of {path.name} from its file name (no ImageLaterality/Laterality tag)")
    if not raw_side:
        return None, "unknown laterality (ImageLaterality and Laterality empty, file name has no L/R)"
    if not raw_view:
        return None, "unknown view (ViewPosition and ViewCodeSequence empty)"
    try:
        side = normalise_side(raw_side)
        view = normalise_view(raw_view)
    except VocabError as exc:
        return None, str(exc)
    slot = slot_of(view)
    if slot is None:
        return None, f"view {view} is neither CC nor MLO (the models read CC and MLO)"
    patient = str(ds.get("PatientID", "") or "").strip() or "unknown"
    study = str(ds.get("StudyInstanceUID", "") or "").strip()
    m = _CBIS_ID.match(patient)
    if m:
        patient = m.group("patient")
        study = str(ds.get("StudyDate", "") or "").strip() or "unknown"
        notes.append("CBIS-DDSM style PatientID: grouped by patient and StudyDate")
    intent = str(ds.get("PresentationIntentType", "") or "").strip().upper()
    return {"path": str(path), "patient": patient, "study": study or "unknown", "side": side, "slot": slot[0],
            "view_rank": slot[1], "view": view, "intent": intent, "sop": str(ds.get("SOPInstanceUID", "") or ""),
            "notes": notes}, None


def _loser_reason(lost: dict, kept: dict) -> str:
    if lost["sop"] and lost["sop"] == kept["sop"]:
        return f"duplicate of {kept['path']} (same SOPInstanceUID)"
    if lost["intent"] == "FOR PROCESSING" and kept["intent"] == "FOR PRESENTATION":
        return f"FOR PROCESSING image; the FOR PRESENTATION image {kept['path']} of this view was used"
    return f"duplicate: another {kept['view']} image of this breast was used ({kept['path']})"


def walk(root: str | Path, progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(exam table, skipped files (file, reason), notes: breast_id -> [note, ...]) for every file under root."""
    root = Path(root).resolve()  # absolute paths: the table is written elsewhere (the work folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder; --dicom takes a folder of DICOM files")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if progress:
        import sys

        from tqdm.auto import tqdm

        files = tqdm(files, desc="reading DICOM headers", unit="file", leave=False, file=sys.stderr)
    skipped, slots = [], defaultdict(list)
    for path in files:
        rec, reason = _image_record(path)
        if rec is None:
            skipped.append({"file": str(path), "reason": reason})
        else:
            slots[(rec["patient"], rec["study"], rec["side"], rec["slot"])].append(rec)
    breasts: dict[tuple, dict] = {}
    notes: dict[str, list] = {}
    for (patient, study, side, slot), recs in sorted(slots.items()):
        recs.sort(key=lambda r: (_INTENT_RANK.get(r["intent"], 1), r["view_rank"], r["path"]))
        kept = recs[0]
        skipped += [{"file": r["path"], "reason": _loser_reason(r, kept)} for r in recs[1:]]
        row = breasts.setdefault((patient, study, side), {"patient_id": patient, "exam_id": study, "side": side,
                                                          "cc_path": "", "mlo_path": "", "cc_view": None,
                                                          "mlo_view": None})
        row[f"{slot}_path"], row[f"{slot}_view"] = kept["path"], kept["view"]
        bid = f"{patient}/{study}/{side}"
        for n in kept["notes"]:
            if n not in notes.setdefault(bid, []):
                notes[bid].append(n)
    table = pd.DataFrame(list(breasts.values()),
                         columns=["patient_id", "exam_id", "side", "cc_path", "mlo_path", "cc_view", "mlo_view"])
    return table, pd.DataFrame(skipped, columns=list(SKIPPED_COLUMNS)), notes


def summary(table: pd.DataFrame, skipped: pd.DataFrame, skipped_path: str | Path | None = None) -> str:
    """One line: images used, breasts / exams / patients, skipped files by reason kind."""
    used = int((table["cc_path"] != "").sum() + (table["mlo_path"] != "").sum()) if len(table) else 0
    one_view = int(((table["cc_path"] == "") | (table["mlo_path"] == "")).sum()) if len(table) else 0
    kinds = Counter(_kind(r) for r in skipped["reason"])
    text = (f"DICOM: {used} images used in {len(table)} breasts ({one_view} with one view), "
            f"{table[['patient_id', 'exam_id']].drop_duplicates().shape[0] if len(table) else 0} exams, "
            f"{table['patient_id'].nunique() if len(table) else 0} patients; {len(skipped)} files skipped")
    if kinds:
        text += " (" + ", ".join(f"{k} {n}" for k, n in kinds.most_common()) + ")"
    if skipped_path is not None and len(skipped):
        text += f", listed in {skipped_path}"
    return text


def _kind(reason: str) -> str:
    for key, name in (("not DICOM", "not DICOM"), ("unreadable", "unreadable"), ("not a mammogram", "not MG"),
                      ("multi-frame", "multi-frame"), ("duplicate", "duplicate"), ("FOR PROCESSING", "for processing"),
                      ("laterality", "unknown laterality"), ("view", "unknown view")):
        if key in reason:
            return name
    return "other"
