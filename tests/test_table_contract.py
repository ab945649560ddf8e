"""The exam-table contract, relaxed on request: linear validation, capped listings, unreadable files,
paths outside the table's folder, optional labels and split, breasts with one view."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from mvmammo.cli import main
from mvmammo.data import exams
from mvmammo.data.table_checks import Problem, capped, check
from mvmammo.errors import MvError


def _table(n: int = 3) -> pd.DataFrame:
    return pd.DataFrame({
        "patient_id": [f"p{i}" for i in range(n)], "exam_id": [f"e{i}" for i in range(n)], "side": ["L"] * n,
        "cc_path": [f"c{i}.png" for i in range(n)], "mlo_path": [f"m{i}.png" for i in range(n)],
        "benign": [0] * n, "malignant": [i % 2 for i in range(n)], "split": ["train"] * n})


def _write(tmp_path, df, name="t.csv"):
    path = tmp_path / name
    exams.write_table(df, path)
    return path


def _cli(capsys, *argv):
    code = main(["validate", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def _one_error(err: str) -> str:
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


# ---- speed and listing ------------------------------------------------------------------------------

def test_validate_is_linear_when_every_patient_is_in_two_splits():
    n = 20_000  # the old per-patient lookup: ~39 s at 8,000 rows, growing with the square (~4 min here)
    df = _table(n)
    df["patient_id"] = [f"p{i // 2}" for i in range(n)]
    df["side"] = ["L", "R"] * (n // 2)
    df["split"] = ["train", "test"] * (n // 2)
    t0 = time.perf_counter()
    found = check(df, check_files=False)
    elapsed = time.perf_counter() - t0
    assert len(found.errors) == n // 2 and {p.kind for p in found.errors} == {"patient in several splits"}
    assert found.errors[0].text == ("row 2, column 'split': patient 'p0' appears in several splits (test, train); "
                                    "splits must be by patient")
    assert elapsed < 15, elapsed


def test_capped_keeps_the_first_lines_of_each_kind_and_counts_the_rest():
    probs = [Problem("a", f"a{i}") for i in range(120)] + [Problem("b", f"b{i}") for i in range(3)]
    lines = capped(probs, per_kind=50)
    assert lines[:50] == [f"a{i}" for i in range(50)]
    assert lines[50] == "... 70 more 'a' problems (all counted; first 50 shown)"
    assert lines[51:] == ["b0", "b1", "b2"]


def test_cli_caps_the_listing_and_ends_in_one_error_line(tmp_path, capsys):
    df = _table(60)
    df["side"] = "X"
    df["patient_id"] = [f"p{i}" for i in range(60)]
    code, out, err = _cli(capsys, _write(tmp_path, df), "--no-files")
    assert code == 1
    assert sum("column 'side': unknown side 'X'" in ln for ln in out.splitlines()) == 50
    assert "... 10 more 'side' problems" in out
    assert "60 problem(s) (side 60)" in _one_error(err)


# ---- unreadable files -----------------------------------------------------------------------------

def test_empty_file_header_only_and_bad_encoding_name_the_file(tmp_path, capsys):
    (tmp_path / "empty.csv").write_bytes(b"")
    code, _, err = _cli(capsys, tmp_path / "empty.csv")
    assert code == 1 and "empty.csv: empty file" in _one_error(err)

    (tmp_path / "header.csv").write_text(",".join(exams.REQUIRED_COLUMNS) + "\n")
    code, out, err = _cli(capsys, tmp_path / "header.csv")
    assert code == 1 and "header.csv: table: no rows" in out and "header.csv" in _one_error(err)

    text = _table(2).to_csv(index=False).replace("p1", "p\xe9").encode("latin-1")  # row 3 = line 3
    (tmp_path / "latin.csv").write_bytes(text)
    code, _, err = _cli(capsys, tmp_path / "latin.csv")
    line = _one_error(err)
    assert code == 1 and "latin.csv: line 3: not UTF-8 text (byte 0xe9" in line


@pytest.mark.parametrize("text,expect", [
    ("patient_id,side\np1,L,x,y\n", "line 2 has more fields than the header line (2 names)"),  # not an index
    ("patient_id,side\np1,L\np2,R,x\n", "Expected 2 fields in line 3, saw 3"),
])
def test_ragged_csv_names_the_line(tmp_path, capsys, text, expect):
    (tmp_path / "r.csv").write_text(text)
    code, _, err = _cli(capsys, tmp_path / "r.csv")
    assert code == 1 and "r.csv: " in _one_error(err) and expect in _one_error(err)


def test_unreadable_parquet_and_unknown_suffix_are_one_line(tmp_path, capsys):
    (tmp_path / "t.parquet").write_bytes(b"not parquet")
    code, _, err = _cli(capsys, tmp_path / "t.parquet")
    assert code == 1 and "t.parquet: not a readable Parquet file" in _one_error(err)
    (tmp_path / "t.xlsx").write_bytes(b"x")
    code, _, err = _cli(capsys, tmp_path / "t.xlsx")
    assert code == 1 and "unknown table format '.xlsx'" in _one_error(err)


def test_table_error_is_one_line_and_an_mv_error(tmp_path):
    df = _table(5)
    df["side"] = "X"
    with pytest.raises(exams.TableError) as info:
        exams.load_valid(_write(tmp_path, df), check_files=False)
    assert isinstance(info.value, MvError) and len(info.value.problems) == 5
    assert "\n" not in str(info.value) and "... and 2 more problems" in str(info.value)


# ---- paths outside the table's folder ------------------------------------------------------------------

def test_paths_outside_the_folder_warn_and_strict_paths_makes_them_errors(tmp_path, capsys):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "x").mkdir()
    for name in ("up.png", "abs.png", "sub/in.png"):
        (tmp_path / name).write_bytes(b"")
    df = _table(2)
    df.loc[0, ["cc_path", "mlo_path"]] = ["../up.png", str(tmp_path / "abs.png")]
    df.loc[1, ["cc_path", "mlo_path"]] = ["in.png", "x/../in.png"]  # stays inside: no warning
    path = _write(sub, df)
    code, out, err = _cli(capsys, path)
    assert code == 0 and "valid" in out
    assert "row 2, column 'cc_path': path '../up.png' leaves the table's folder" in err
    assert "row 2, column 'mlo_path': absolute path" in err
    assert "2 image path(s) outside the table's folder" in err and "error:" not in err
    code, out, err = _cli(capsys, path, "--strict-paths")
    assert code == 1 and "row 2, column 'cc_path': path '../up.png'" in out
    assert "2 problem(s)" in _one_error(err)


# ---- labels and split optional -----------------------------------------------------------------------

def test_labels_optional_are_minus_one_and_required_by_default(tmp_path):
    df = _table(3).astype({"malignant": object})
    df.loc[1, "malignant"] = None  # empty cell
    no_benign = _write(tmp_path, df.drop(columns=["benign"]), "nb.csv")
    loaded = exams.load_valid(no_benign, check_files=False, require_labels=False)
    assert loaded["benign"].tolist() == [-1, -1, -1] and loaded["malignant"].tolist() == [0, -1, 0]
    assert not exams.labelled(loaded)
    with pytest.raises(exams.TableError, match="column 'benign': missing"):
        exams.load_valid(no_benign, check_files=False)
    with_empty = _write(tmp_path, df, "e.csv")
    with pytest.raises(exams.TableError, match="row 3, column 'malignant'.*--no-labels"):
        exams.load_valid(with_empty, check_files=False)
    df.loc[2, "benign"] = 2  # not a label even for a table to predict on
    assert check(df, check_files=False, require_labels=False).errors[0].text.startswith(
        "row 4, column 'benign': value 2 is not 0 or 1")
    assert exams.labelled(_table(3)) and not exams.labelled(_table(3).drop(columns="malignant"))


def test_split_optional_is_all(tmp_path):
    path = _write(tmp_path, _table(2).drop(columns="split"))
    with pytest.raises(exams.TableError, match="column 'split': missing"):
        exams.load_valid(path, check_files=False)
    assert exams.load_valid(path, check_files=False, require_split=False)["split"].tolist() == ["all", "all"]


def test_validate_no_labels_cli_and_summary(tmp_path, capsys):
    df = _table(4)
    df["benign"] = [0, 1, -1, -1]
    path = _write(tmp_path, df)
    code, out, err = _cli(capsys, path, "--no-files")
    assert code == 1 and "row 4, column 'benign': value -1 is not 0 or 1" in out
    code, out, err = _cli(capsys, path, "--no-files", "--no-labels")
    assert code == 0 and "benign 1 (25.0%)" in out and "unlabelled (label unknown) 2 (50.0%)" in out


# ---- one view -----------------------------------------------------------------------------------

def test_view_present_and_missing_view_rules(tmp_path):
    df = _table(4).astype({"cc_path": object, "mlo_path": object})
    df.loc[1, "mlo_path"] = ""
    df.loc[2, "cc_path"] = None
    df.loc[3, ["cc_path", "mlo_path"]] = [None, " "]
    assert exams.view_present(df).tolist() == [[True, True], [True, False], [False, True], [False, False]]
    strict = [p.text for p in check(df, check_files=False).errors]
    assert strict == [
        "row 4, column 'cc_path': empty path (missing view; pass --allow-missing-view to keep breasts with one view)",
        "row 5, column 'cc_path': empty path (missing view; pass --allow-missing-view to keep breasts with one view)",
        "row 3, column 'mlo_path': empty path (missing view; pass --allow-missing-view to keep breasts with one view)",
        "row 5, column 'mlo_path': empty path (missing view; pass --allow-missing-view to keep breasts with one view)"]
    relaxed = [p.text for p in check(df, check_files=False, allow_missing_view=True).errors]
    assert relaxed == ["row 5, columns 'cc_path' and 'mlo_path': both empty (a breast needs at least one view)"]
    df["cc_heatmap_benign"] = ["h0.png", None, "h2.png", None]  # row 4 has no CC: its heatmap must be empty
    relaxed = [p.text for p in check(df.iloc[:3], check_files=False, allow_missing_view=True).errors]
    assert relaxed == ["row 4, column 'cc_heatmap_benign': heatmap 'h2.png' given for an absent CC view "
                       "(empty cc_path); leave it empty"]


def test_one_view_table_through_the_cli_and_load_valid(tmp_path, capsys):
    df = _table(2).astype({"mlo_path": object})
    df.loc[1, "mlo_path"] = None
    path = _write(tmp_path, df)
    code, out, _ = _cli(capsys, path, "--no-files")
    assert code == 1 and "pass --allow-missing-view" in out
    code, out, _ = _cli(capsys, path, "--no-files", "--allow-missing-view")
    assert code == 0 and "one view only 1 (50.0%)" in out
    loaded = exams.load_valid(path, False, allow_missing_view=True)  # positional check_files still works
    assert exams.view_present(loaded).tolist() == [[True, True], [True, False]]


def test_no_traceback_through_the_real_entry_point(tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    res = subprocess.run([sys.executable, "-m", "mvmammo", "validate", str(tmp_path / "empty.csv")],
                         capture_output=True, text=True)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [f"error: {tmp_path / 'empty.csv'}: empty file (no header line, no "
                                               "rows); expected a CSV with a header line"]


def test_write_table_leaves_no_temporary_file(tmp_path):
    exams.write_table(_table(2), tmp_path / "t.csv")
    exams.write_table(_table(3), tmp_path / "t.csv")  # replaced whole
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]
    assert len(exams.read_table(tmp_path / "t.csv")) == 3
    assert np.array_equal(exams.view_present(_table(0)), np.zeros((0, 2), bool))
