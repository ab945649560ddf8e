"""Speed of `mvmammo validate` on tables where every patient sits in two splits (issue 10 item 9).

The worst case of the old code: the patient-to-rows lookup was rebuilt per bad patient (8,000 rows took
39 s, quadratic). Each patient here has two breasts (L, R) in different splits, so there are N/2 split
problems; with ``--bad-sides`` every row also has an unknown side (N more problems). Timed per size:

- ``check``: :func:`mvmammo.data.table_checks.check` on the loaded frame (all checks, no file lookups);
- ``cli``: ``python -m mvmammo validate TABLE --no-files`` end to end in a subprocess (interpreter start,
  CSV read, checks, capped listing; exit 1 since the table is invalid); ``cli_startup_s`` is the fixed part
  (``python -m mvmammo --version``);
- ``files`` (only N <= --files-max): ``check`` with the file lookups, against N x 2 empty files.

  python benchmarks/validate_speed.py                       # 10k and 100k rows
  python benchmarks/validate_speed.py --rows 10000 100000 --out benchmarks/results/validate_speed.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from mvmammo.data import exams
from mvmammo.data.table_checks import check


def make_table(rows: int, bad_sides: bool) -> pd.DataFrame:
    """rows // 2 patients, each with an L breast in train and an R breast in test."""
    n = rows // 2 * 2
    pid = [f"p{i // 2:06d}" for i in range(n)]
    return pd.DataFrame({
        "patient_id": pid, "exam_id": [f"e{i // 2:06d}" for i in range(n)],
        "side": ["X" if bad_sides else ("L" if i % 2 == 0 else "R") for i in range(n)],
        "cc_path": [f"img/{i:07d}_cc.png" for i in range(n)], "mlo_path": [f"img/{i:07d}_mlo.png" for i in range(n)],
        "benign": [i % 3 == 0 for i in range(n)], "malignant": [0] * n,
        "split": ["train" if i % 2 == 0 else "test" for i in range(n)],
    }).astype({"benign": int})


def time_one(rows: int, folder: Path, bad_sides: bool, files_max: int) -> dict:
    df = make_table(rows, bad_sides)
    path = folder / f"t{rows}.csv"
    exams.write_table(df, path)
    loaded = exams.read_table(path)
    t0 = time.perf_counter()
    found = check(loaded, check_files=False)
    t_check = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "mvmammo", "validate", str(path), "--no-files"],
                         capture_output=True, text=True)
    t_cli = time.perf_counter() - t0
    out = {"rows": len(df), "problems": len(found.errors), "check_s": round(t_check, 3),
           "check_rows_per_s": round(len(df) / t_check), "cli_s": round(t_cli, 3),
           "cli_rows_per_s": round(len(df) / t_cli), "cli_exit": res.returncode,
           "cli_stdout_lines": len(res.stdout.splitlines())}
    if len(df) <= files_max:
        (folder / "img").mkdir(exist_ok=True)
        for c in ("cc_path", "mlo_path"):
            for rel in df[c]:
                (folder / rel).touch()
        t0 = time.perf_counter()
        check(loaded, check_files=True)
        t_files = time.perf_counter() - t0
        out.update(files_s=round(t_files, 3), files_rows_per_s=round(len(df) / t_files))
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--bad-sides", action="store_true", help="also an unknown side on every row")
    p.add_argument("--files-max", type=int, default=10_000, help="time file lookups up to this many rows")
    p.add_argument("--out", default="benchmarks/results/validate_speed.json")
    args = p.parse_args(argv)
    t0 = time.perf_counter()  # the fixed cost inside every cli_s: interpreter start and imports
    subprocess.run([sys.executable, "-m", "mvmammo", "--version"], capture_output=True, check=True)
    startup = round(time.perf_counter() - t0, 3)
    with tempfile.TemporaryDirectory() as tmp:
        results = [time_one(n, Path(tmp), args.bad_sides, args.files_max) for n in args.rows]
    record = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": f"{platform.machine()}, "
              f"{os.cpu_count()} CPUs, Python {platform.python_version()}, pandas {pd.__version__}",
              "command": "python benchmarks/validate_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "load_average_1min_after": round(os.getloadavg()[0], 2), "bad_sides": args.bad_sides,
              "cli_startup_s": startup,
              "results": results}
    for r in results:
        print(json.dumps(r))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return record


if __name__ == "__main__":
    main()
