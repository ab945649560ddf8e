"""DICOM mammograms: pixels as uint16 (H, W), and laterality / view from the tags.

Pixel pipeline: stored values (only BitsStored bits) -> modality LUT (rescale or LUT sequence) ->
optional VOI LUT / window -> MONOCHROME1 inverted so that tissue is bright -> shifted so the nominal
minimum is 0 -> uint16. Values are not stretched: a 12-bit image stays 0..4095, an 8-bit one 0..255.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mvmammo.data.sources.vocab import VIEW_CODE_VALUES, VocabError, is_view_string, normalise_side, normalise_view

CODEC_EXTRA = "pip install 'mvmammo[codecs]'"
_HEADER_TAGS = ["ImageLaterality", "Laterality", "ViewPosition", "ViewCodeSequence", "PatientOrientation",
                "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SeriesDescription", "Rows", "Columns",
                "BitsStored", "PhotometricInterpretation"]


class DicomError(ValueError):
    """A DICOM file cannot be used; the message names the file and the fix."""


def is_dicom(path: str | Path) -> bool:
    """True for a .dcm/.dicom name or a file with the 'DICM' preamble marker at byte 128."""
    path = Path(path)
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_header(path: str | Path, tags: list[str] | None = None):
    """The dataset without pixel data (fast); raises DicomError for an unreadable file."""
    import pydicom

    path = Path(path)
    if not path.exists():
        raise DicomError(f"{path}: file not found")
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=tags or _HEADER_TAGS)
    except Exception as exc:  # pydicom raises InvalidDicomError, EOFError, OSError, struct errors...
        raise DicomError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})") from exc


def _check_codec(path: Path, ts) -> None:
    """Raise naming the transfer syntax and the extra to install when no decoder can read it."""
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise DicomError(f"{path}: transfer syntax {ts.name if hasattr(ts, 'name') else ts} ({ts}) is not "
                         f"supported by pydicom; convert the file (e.g. gdcmconv --raw)") from None
    if not decoder.is_available:
        raise DicomError(f"{path}: compressed with {ts.name} ({ts}) and no decoder for it is installed; "
                         f"install the codec extra: {CODEC_EXTRA} "
                         f"(missing: {'; '.join(decoder.missing_dependencies)})")


def _nominal_range(ds, bits: int) -> tuple[float, float]:
    """Range of the values after the modality LUT, from the header (not from the data)."""
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    if "ModalityLUTSequence" in ds:
        desc = ds.ModalityLUTSequence[0].LUTDescriptor
        return 0.0, float(2 ** int(desc[2]) - 1)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    icpt = float(ds.get("RescaleIntercept", 0) or 0)
    a, b = lo * slope + icpt, hi * slope + icpt
    return min(a, b), max(a, b)


def read_dicom(path: str | Path, voi_lut: bool = False) -> np.ndarray:
    """Decode one single-frame grayscale DICOM as uint16 (H, W); see the module doc for the steps."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    path = Path(path)
    if not path.exists():
        raise DicomError(f"{path}: file not found")
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise DicomError(f"{path}: not a readable DICOM file, truncated or corrupt "
                         f"({type(exc).__name__}: {exc})") from exc
    if "PixelData" not in ds:
        raise DicomError(f"{path}: DICOM has no pixel data (truncated file, or a report / structured document?)")
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is not None:
        _check_codec(path, ts)
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise DicomError(f"{path}: colour DICOM ({ds.get('PhotometricInterpretation')}); "
                         "mammograms must be single-channel grayscale")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise DicomError(f"{path}: multi-frame DICOM ({frames} frames, tomosynthesis?); only 2D mammograms "
                         "are supported")
    try:
        arr = ds.pixel_array
    except Exception as exc:
        tsn = getattr(ts, "name", ts)
        raise DicomError(f"{path}: pixel data cannot be decoded (transfer syntax {tsn}): truncated or corrupt "
                         f"file? ({type(exc).__name__}: {exc})") from exc
    bits = int(ds.get("BitsStored", arr.dtype.itemsize * 8))
    if arr.dtype.kind == "u" and bits < arr.dtype.itemsize * 8:
        arr = arr & np.asarray((1 << bits) - 1, dtype=arr.dtype)  # drop overlay / garbage high bits
    lo, hi = _nominal_range(ds, bits)
    identity = ("ModalityLUTSequence" not in ds and float(ds.get("RescaleSlope", 1) or 1) == 1
                and float(ds.get("RescaleIntercept", 0) or 0) == 0)
    use_voi = voi_lut and ("WindowCenter" in ds or "VOILUTSequence" in ds)
    if identity and not use_voi:
        out = arr.astype(np.int64) if arr.dtype.kind == "i" else arr  # fast path: no float copy of 13 Mpx
    else:
        out = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
        if use_voi:
            out = np.asarray(apply_voi_lut(out, ds, index=0), dtype=np.float64)
            if "VOILUTSequence" in ds:
                lo, hi = 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
    mono1 = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip() == "MONOCHROME1"
    if out.dtype.kind == "u" and lo == 0 and hi <= 65535:
        out = out.astype(np.uint16, copy=False)
        return (np.uint16(hi) - out) if mono1 else out  # MONOCHROME1: high values are dark; invert
    if mono1:
        out = hi - (out - lo)  # invert within the nominal range
    out = np.rint(out - lo)
    return np.clip(out, 0, 65535).astype(np.uint16)


def _view_from_code_sequence(ds) -> str | None:
    seq = ds.get("ViewCodeSequence")
    if not seq:
        return None
    item = seq[0]
    meaning = str(item.get("CodeMeaning", "")).strip()
    if meaning:
        return meaning
    code = str(item.get("CodeValue", "")).strip()
    return VIEW_CODE_VALUES.get(code, code or None)


def side_view_from_dataset(ds) -> tuple[str | None, str | None]:
    """Raw (side, view) strings from the tags, or None where no tag holds one."""
    side = None
    for tag in ("ImageLaterality", "Laterality"):
        v = str(ds.get(tag, "") or "").strip()
        if v:
            side = v
            break
    view = str(ds.get("ViewPosition", "") or "").strip() or _view_from_code_sequence(ds)
    if not view:
        # Not standard, but CBIS-DDSM stores "CC"/"MLO" here; a real orientation ("A\\R") is ignored.
        po = ds.get("PatientOrientation", "") or ""
        po = po if isinstance(po, str) else "\\".join(str(x) for x in po)  # MultiValue for "A\\R"
        if po.strip() and is_view_string(po.strip()):
            view = po.strip()
    return side, view


def dicom_view_info(path: str | Path, side: str | None = None, view: str | None = None) -> tuple[str, str]:
    """(side 'L'/'R', view code 'CC'/'MLO'/...) from the DICOM tags, else from the metadata given.

    Tags first (ImageLaterality, Laterality; ViewPosition, ViewCodeSequence), the ``side``/``view``
    arguments (a source's metadata) only where no tag holds a value; never from file names or order.
    Raises DicomError for an unknown string or when neither tags nor metadata give a value.
    """
    ds = read_header(path)
    tag_side, tag_view = side_view_from_dataset(ds)
    raw_side = tag_side or side
    raw_view = tag_view or view
    if not raw_side:
        raise DicomError(f"{path}: no laterality (ImageLaterality/Laterality empty and no metadata value)")
    if not raw_view:
        raise DicomError(f"{path}: no view (ViewPosition/ViewCodeSequence empty and no metadata value)")
    try:
        return normalise_side(raw_side), normalise_view(raw_view)
    except VocabError as exc:
        raise DicomError(f"{path}: {exc}") from None


def read_pixel_spacing(path: str | Path) -> tuple[float, float] | None:
    """(row, column) spacing in mm from PixelSpacing, else ImagerPixelSpacing; None when neither holds two
    positive numbers. PixelSpacing comes first: where present in a mammogram it is calibrated (e.g. to the
    breast plane), ImagerPixelSpacing is at the detector."""
    ds = read_header(path, ["PixelSpacing", "ImagerPixelSpacing"])
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(tag)
        if value is None:
            continue
        try:
            parts = [float(v) for v in (value if hasattr(value, "__len__") and not isinstance(value, str)
                                        else str(value).split("\\"))]
        except (TypeError, ValueError):
            continue
        if len(parts) == 1:
            parts = parts * 2
        if len(parts) == 2 and all(p > 0 and np.isfinite(p) for p in parts):
            return parts[0], parts[1]
    return None
