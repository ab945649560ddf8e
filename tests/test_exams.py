"""The exam-table contract: every error class triggers with a line naming the row and column."""
import subprocess
import sys

import pandas as pd
import pytest

from mvmammo.data import exams
from mvmammo.data.images import write_png16


@pytest.fixture
def table(tmp_path):
    import numpy as np

    for name in ("a_cc.png", "a_mlo.png", "b_cc.png", "b_mlo.png", "c_cc.png", "c_mlo.png"):
        write_png16(tmp_path / name, np.zeros((8, 6), dtype=np.uint16))
    df = pd.DataFrame({
        "patient_id": ["p1", "p1", "p2"], "exam_id": ["e1", "e1", "e2"], "side": ["L", "R", "L"],
        "cc_path": ["a_cc.png", "b_cc.png", "c_cc.png"], "mlo_path": ["a_mlo.png", "b_mlo.png", "c_mlo.png"],
        "benign": [0, 1, 0], "malignant": [0, 0, 1], "split": ["train", "train", "test"],
    })
    return tmp_path, df


def _problems(tmp_path, df, name="t.csv"):
    path = tmp_path / name
    exams.write_table(df, path)
    return exams.validate(exams.read_table(path))


def test_valid_table_passes_csv_and_parquet(table):
    tmp_path, df = table
    assert _problems(tmp_path, df) == []
    assert _problems(tmp_path, df, "t.parquet") == []
    loaded = exams.load_valid(tmp_path / "t.csv")
    assert list(loaded.breast_id) == ["p1/e1/L", "p1/e1/R", "p2/e2/L"]


def test_missing_column(table):
    tmp_path, df = table
    probs = _problems(tmp_path, df.drop(columns=["malignant"]))
    assert len(probs) == 1 and "'malignant'" in probs[0] and "missing" in probs[0]


@pytest.mark.parametrize("col,value,expect", [
    ("malignant", 2, "row 3, column 'malignant'"),
    ("benign", "yes", "row 3, column 'benign'"),
    ("side", "X", "row 3, column 'side'"),
    ("cc_path", "nope.png", "row 3, column 'cc_path': image file not found"),
    ("mlo_path", "", "row 3, column 'mlo_path': empty path"),
])
def test_each_cell_error_names_row_and_column(table, col, value, expect):
    tmp_path, df = table
    df = df.astype(object)
    df.loc[1, col] = value
    probs = _problems(tmp_path, df)
    assert any(expect in p for p in probs), probs


def test_unknown_view_value(table):
    tmp_path, df = table
    df["cc_view"] = ["CC", "MLO", "cc"]
    probs = _problems(tmp_path, df)
    assert len(probs) == 1 and "row 3, column 'cc_view'" in probs[0]


def test_duplicate_breast(table):
    tmp_path, df = table
    df = pd.concat([df, df.iloc[[0]]], ignore_index=True)
    probs = _problems(tmp_path, df)
    assert any("duplicate breast 'p1/e1/L'" in p and "row 2" in p and "row 5" in p for p in probs), probs


def test_patient_in_two_splits(table):
    tmp_path, df = table
    df.loc[1, "split"] = "val"
    probs = _problems(tmp_path, df)
    assert any("patient 'p1'" in p and "several splits" in p for p in probs), probs


def test_cli_exit_codes(table):
    tmp_path, df = table
    exams.write_table(df, tmp_path / "ok.csv")
    bad = df.copy()
    bad.loc[0, "side"] = "left?"
    exams.write_table(bad, tmp_path / "bad.csv")
    ok = subprocess.run([sys.executable, "-m", "mvmammo", "validate", str(tmp_path / "ok.csv")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "valid" in ok.stdout
    res = subprocess.run([sys.executable, "-m", "mvmammo", "validate", str(tmp_path / "bad.csv")],
                         capture_output=True, text=True)
    assert res.returncode == 1
    assert "row 2, column 'side'" in res.stdout
