"""The importers write the annotation table beside the exam table; `patches extract` reads it by default."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixture_files import CBIS_CALC_HEADER, CBIS_MASS_HEADER, breast_image, cbis_path, write_dicom

from mvmammo.cli import main
from mvmammo.data.annotations import annotation_path
from mvmammo.patches.annotations import read_annotations

H, W = 96, 72


def _lesion_mask(y: int, x: int, r: int = 8) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (((yy - y) ** 2 + (xx - x) ** 2) <= r * r).astype(np.uint16) * 255


def _cbis(tmp_path: Path) -> list[Path]:
    """TCIA layout: full image, ROI mask (full size) and crop per abnormality; the calc rows' ROI and crop
    columns swapped (a known CBIS quirk), the mass rows of one breast with no mask file at all."""
    root = tmp_path / "CBIS-DDSM"
    img = breast_image(H, W)

    def dcm(case, name, arr, desc):
        return write_dicom(root / case / "08-07-2016-DDSM-1" / desc / name, arr, side=None, view=None,
                           patient_id=case, series_description=desc)

    calc = []
    for case, side, view, pathology, centre in (
            ("Calc-Training_P_00001_LEFT_CC", "LEFT", "CC", "BENIGN_WITHOUT_CALLBACK", (40, 20)),
            ("Calc-Training_P_00001_LEFT_MLO", "LEFT", "MLO", "BENIGN", (50, 20)),
            ("Calc-Training_P_00002_RIGHT_MLO", "RIGHT", "MLO", "MALIGNANT", (48, 20))):
        dcm(case, "1-1.dcm", img, "full mammogram images")
        dcm(f"{case}_1", "1-1.dcm", _lesion_mask(*centre), "ROI mask images")
        dcm(f"{case}_1", "1-2.dcm", img[:16, :16], "cropped images")
        calc.append(["P_" + case.split("_P_")[1][:5], 3, side, view, 1, "calcification", "PLEOMORPHIC", "CLUSTERED",
                     4, pathology, 3, cbis_path(case), cbis_path(case, 1, "1-1.dcm"), cbis_path(case, 1, "1-2.dcm")])
    pd.DataFrame(calc, columns=CBIS_CALC_HEADER).to_csv(tmp_path / "calc_case_description_train_set.csv",
                                                        index=False)
    mass = []
    for v in ("CC", "MLO"):
        case = f"Mass-Training_P_00003_RIGHT_{v}"
        dcm(case, "1-1.dcm", img, "full mammogram images")
        mass.append(["P_00003", 2, "RIGHT", v, 1, "mass", "OVAL", "CIRCUMSCRIBED", 4, "MALIGNANT", 3,
                     cbis_path(case), "", ""])
    pd.DataFrame(mass, columns=CBIS_MASS_HEADER).to_csv(tmp_path / "mass_case_description_train_set.csv",
                                                        index=False)
    return [tmp_path / "calc_case_description_train_set.csv", tmp_path / "mass_case_description_train_set.csv"]


def test_cbis_import_writes_the_resolved_masks_and_extract_reads_them(tmp_path, capsys):
    csvs = _cbis(tmp_path)
    out = tmp_path / "t" / "exams.csv"
    assert main(["import", "cbis", *map(str, csvs), "--images", str(tmp_path / "CBIS-DDSM"), "--out", str(out),
                 "--random-split", "--split-fractions", "1", "0", "0"]) == 0
    printed = capsys.readouterr().out
    path = annotation_path(out)
    assert path == out.with_name("exams_annotations.csv") and path.exists() and "lesion outlines" in printed
    ann = read_annotations(path)               # our table layout, readable as it is
    # P_00001 L: both views, BWC counted benign (the importer's default); P_00002 R has no CC (breast dropped);
    # P_00003 R: mass rows without a mask of the full image's size (noted, not written).
    assert sorted(zip(ann["patient_id"], ann["side"], ann["view"], ann["cls"])) == [
        ("P_00001", "L", "cc", "benign"), ("P_00001", "L", "mlo", "benign")]
    assert all(p.endswith("ROI mask images/1-1.dcm") and Path(p).is_absolute() for p in ann["mask_path"])
    notes = " ".join(__import__("json").loads(out.with_name("exams_import_report.json").read_text())["notes"])
    assert "2 abnormality row(s) without an ROI mask" in notes and "1 on images or breasts not in" in notes
    # `patches extract` finds the table beside exams.csv without --annotations and cuts benign patches on it.
    assert main(["patches", "extract", str(out), "--out", str(tmp_path / "ps"), "--patch", "16", "--per-lesion", "3",
                 "--per-image", "2", "--quiet"]) == 0
    idx = pd.read_csv(tmp_path / "ps" / "index.csv")
    assert (idx["cls"] == "benign").sum() == 6 and "malignant" not in set(idx["cls"])
    assert "name no image" not in capsys.readouterr().out


def test_cbis_without_bwc_benign_leaves_those_outlines_out(tmp_path, capsys):
    csvs = _cbis(tmp_path)
    out = tmp_path / "exams.csv"
    assert main(["import", "cbis", *map(str, csvs), "--images", str(tmp_path / "CBIS-DDSM"), "--out", str(out),
                 "--random-split", "--no-bwc-benign"]) == 0
    ann = pd.read_csv(annotation_path(out))
    assert list(zip(ann["view"], ann["cls"])) == [("mlo", "benign")]
    assert "BENIGN_WITHOUT_CALLBACK outline(s) left out" in capsys.readouterr().out


def _vindr(tmp_path: Path) -> Path:
    rows, findings = [], []
    for study, birads in (("s1", {"L": 4, "R": 1}), ("s2", {"L": 2, "R": 1})):
        for side in "LR":
            for view in ("CC", "MLO"):
                image_id = f"{study}{side}{view}"
                write_dicom(tmp_path / "images" / study / f"{image_id}.dicom", side=side, view=view)
                rows.append([study, "ser", image_id, side, view, 32, 24, f"BI-RADS {birads[side]}", "DENSITY C",
                             "training"])
    write_dicom(tmp_path / "images" / "s1" / "s1LXCCL.dicom", side="L", view="XCCL")   # not used: s1 L has a CC
    box = lambda study, image_id, side, view, b: [study, "ser", image_id, side, view, 32, 24, "DENSITY C",  # noqa
                                                   "['Mass']", b, 4.0, 5.0, 14.0, 15.0, "training"]
    findings = [box("s1", "s1LCC", "L", "CC", "BI-RADS 4"), box("s1", "s1LMLO", "L", "MLO", "BI-RADS 5"),
                box("s2", "s2LCC", "L", "CC", "BI-RADS 2"), box("s1", "s1LXCCL", "L", "XCCL", "BI-RADS 4"),
                box("s2", "s2LMLO", "L", "MLO", "BI-RADS 3")]
    findings.append(["s2", "ser", "s2RCC", "R", "CC", 32, 24, "DENSITY C", "['No Finding']", "BI-RADS 1",
                     None, None, None, None, "training"])
    pd.DataFrame(rows, columns=["study_id", "series_id", "image_id", "laterality", "view_position", "height",
                                "width", "breast_birads", "breast_density", "split"]
                 ).to_csv(tmp_path / "breast-level_annotations.csv", index=False)
    pd.DataFrame(findings, columns=["study_id", "series_id", "image_id", "laterality", "view_position", "height",
                                    "width", "breast_density", "finding_categories", "finding_birads", "xmin", "ymin",
                                    "xmax", "ymax", "split"]
                 ).to_csv(tmp_path / "finding_annotations.csv", index=False)
    return tmp_path / "breast-level_annotations.csv"


def test_vindr_import_writes_boxes_of_the_table_images(tmp_path, capsys):
    csv = _vindr(tmp_path)
    out = tmp_path / "exams.csv"
    assert main(["import", "vindr", str(csv), "--images", str(tmp_path / "images"), "--out", str(out)]) == 0
    ann = read_annotations(annotation_path(out))
    # BI-RADS 4/5 malignant, 2 benign; BI-RADS 3 and "No Finding" are no lesion; the XCCL box was drawn on an
    # image that is not the table's CC of that breast, so it is left out rather than put on the wrong image.
    got = sorted(zip(ann["exam_id"], ann["side"], ann["view"], ann["cls"]))
    assert got == [("s1", "L", "cc", "malignant"), ("s1", "L", "mlo", "malignant"), ("s2", "L", "cc", "benign")]
    assert list(ann.loc[0, ["xmin", "ymin", "xmax", "ymax"]]) == [4.0, 5.0, 14.0, 15.0]
    assert all(p.endswith(".dicom") for p in ann["image_path"])
    assert "lesion outlines" in capsys.readouterr().out
    # --findings names another file; a missing one is a one-line error.
    assert main(["import", "vindr", str(csv), "--images", str(tmp_path / "images"), "--out", str(out),
                 "--findings", str(tmp_path / "nope.csv")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.csv" in err[0] and err[0].startswith("error: ")


def test_vindr_without_findings_says_so(tmp_path, capsys):
    csv = _vindr(tmp_path)
    (tmp_path / "finding_annotations.csv").unlink()
    out = tmp_path / "exams.csv"
    assert main(["import", "vindr", str(csv), "--images", str(tmp_path / "images"), "--out", str(out)]) == 0
    assert not annotation_path(out).exists()
    assert "no finding_annotations.csv" in capsys.readouterr().out


@pytest.mark.parametrize("value,slot", [("CC", "cc"), ("mlo", "mlo"), ("XCCL", "cc"), ("ML", "mlo"), ("LM", None),
                                        ("nonsense", None)])
def test_view_slots_follow_the_importers_vocabulary(value, slot):
    from mvmammo.data.annotations import _slot
    assert _slot(value) == slot


def test_extract_says_when_no_lesion_patch_was_cut(tmp_path, capsys):
    csvs = _cbis(tmp_path)
    out = tmp_path / "exams.csv"
    assert main(["import", "cbis", *map(str, csvs), "--images", str(tmp_path / "CBIS-DDSM"), "--out", str(out),
                 "--random-split"]) == 0
    empty = pd.read_csv(annotation_path(out)).iloc[:0]
    empty.to_csv(tmp_path / "none.csv", index=False)
    capsys.readouterr()
    assert main(["patches", "extract", str(out), "--out", str(tmp_path / "ps"), "--patch", "16",
                 "--annotations", str(tmp_path / "none.csv"), "--quiet"]) == 0
    assert "no malignant or benign patch" in capsys.readouterr().out


def test_extract_refuses_a_preprocessed_table(tmp_path, capsys):
    csvs = _cbis(tmp_path)
    out = tmp_path / "exams.csv"
    assert main(["import", "cbis", *map(str, csvs), "--images", str(tmp_path / "CBIS-DDSM"), "--out", str(out),
                 "--random-split"]) == 0
    t = pd.read_csv(out)
    t["cc_crop_box"] = "0 0 10 10"                  # what `mvmammo preprocess` adds to its table
    t.to_csv(tmp_path / "pre.csv", index=False)
    capsys.readouterr()
    assert main(["patches", "extract", str(tmp_path / "pre.csv"), "--out", str(tmp_path / "ps"), "--patch", "16",
                 "--annotations", str(annotation_path(out)), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "preprocessed table" in err[0] and not (tmp_path / "ps").exists()
