"""The heatmap command's overlapped stages: same files as one image at a time, bounded memory, clean failure."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from mvmammo.heatmaps import pipeline
from test_heatmaps import _tiny_table, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_run_keeps_job_order_and_bounds_what_is_in_flight():
    lock = threading.Lock()
    live = {"loaded": 0, "max_loaded": 0, "results": 0, "max_results": 0}
    infer_threads = set()

    def load(j):
        time.sleep(0.002 * (j % 3))          # loads finish out of order
        with lock:
            live["loaded"] += 1
            live["max_loaded"] = max(live["max_loaded"], live["loaded"])
        return j * 10

    def infer(j, item):
        infer_threads.add(threading.get_ident())
        with lock:
            live["loaded"] -= 1
            live["results"] += 1
            live["max_results"] = max(live["max_results"], live["results"])
        return item + 1

    def write(j, res):
        time.sleep(0.003 * ((j + 1) % 2))    # writes finish out of order
        with lock:
            live["results"] -= 1
        return res * 2

    seen = []
    n = pipeline.run(range(20), load, infer, write, workers=3, on_done=lambda j, r: seen.append((j, r)),
                     ahead=4, behind=5)
    assert n == 20
    assert seen == [(j, (j * 10 + 1) * 2) for j in range(20)]        # every job once, in order, right values
    assert infer_threads == {threading.get_ident()}                    # the device stage stays on this thread
    assert live["max_loaded"] <= 4 + 1      # ahead waiting + the one being handed to infer
    assert live["max_results"] <= 5 + 1     # behind waiting + the one just made
    assert live["loaded"] == 0 and live["results"] == 0


@pytest.mark.parametrize("stage", ["load", "write"])
def test_run_raises_the_first_failure_and_starts_nothing_more(stage):
    started = []

    def load(j):
        started.append(j)
        if stage == "load" and j == 3:
            raise ValueError(f"bad image {j}")
        return j

    def write(j, res):
        if stage == "write" and j == 3:
            raise ValueError(f"bad image {j}")
        return res

    with pytest.raises(ValueError, match="bad image 3"):
        pipeline.run(range(100), load, lambda j, x: x, write, workers=2, ahead=2, behind=2)
    assert max(started) < 10          # the table is not read to its end after the failure


def test_workers_zero_is_the_plain_loop():
    order = []
    pipeline.run(range(3), lambda j: order.append(("load", j)) or j, lambda j, x: order.append(("infer", j)) or x,
                 lambda j, x: order.append(("write", j)) or x, workers=0)
    assert order == [(s, j) for j in range(3) for s in ("load", "infer", "write")]


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted((folder / "maps").iterdir())}


def test_threaded_command_writes_the_same_files_as_one_at_a_time(tmp_path):
    from mvmammo.heatmaps.table import make_heatmaps
    from mvmammo.patches.runs import write_model

    table = _tiny_table(tmp_path, n=4)
    write_model(tmp_path / "patch_run", tiny_model(), patch=32)
    a = make_heatmaps(table, tmp_path / "patch_run", tmp_path / "serial", stride=10, progress=False, workers=0)
    b = make_heatmaps(table, tmp_path / "patch_run", tmp_path / "threaded", stride=10, progress=False, workers=3)
    assert a["images"] == b["images"] == 8 and a["patches"] == b["patches"] > 0
    fa, fb = _files(tmp_path / "serial"), _files(tmp_path / "threaded")
    assert fa.keys() == fb.keys() and len(fa) == 8 * 3
    png = [k for k in fa if k.endswith(".png")]
    assert all(fa[k] == fb[k] for k in png)                     # the maps byte for byte
    for k in set(fa) - set(png):                                # the grids: same arrays
        za, zb = np.load(tmp_path / "serial" / "maps" / k), np.load(tmp_path / "threaded" / "maps" / k)
        for name in za.files:
            np.testing.assert_array_equal(za[name], zb[name])
    assert (tmp_path / "serial" / "exams.csv").read_text() == (tmp_path / "threaded" / "exams.csv").read_text()


def test_a_bad_image_is_one_line_and_the_rest_resumes(tmp_path, capsys):
    from mvmammo.cli import main
    from mvmammo.patches.runs import write_model

    table = _tiny_table(tmp_path, n=4)
    write_model(tmp_path / "patch_run", tiny_model(), patch=32)
    good = (tmp_path / "img" / "2_cc.png").read_bytes()
    (tmp_path / "img" / "2_cc.png").write_bytes(b"not a png")
    out = tmp_path / "hm"
    argv = ["heatmaps", str(table), "--patch-model", str(tmp_path / "patch_run"), "--out", str(out),
            "--stride", "10", "--quiet", "--workers", "2"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "2_cc.png" in err[0]
    assert not list((out / "maps").glob(".*tmp*"))              # nothing half-written
    (tmp_path / "img" / "2_cc.png").write_bytes(good)
    assert main(argv) == 0
    msg = capsys.readouterr().out
    done = int(msg.split(" images done")[0].rsplit(" ", 1)[1])
    assert 0 < done < 8 and f"{8 - done} already there" in msg    # what finished before the failure is kept
    assert main(argv[:-2] + ["--workers", "-1"]) == 1
    assert "--workers -1" in capsys.readouterr().err


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path, capsys, monkeypatch):
    import errno

    from mvmammo.cli import main
    from mvmammo.data import images
    from mvmammo.patches.runs import write_model

    table = _tiny_table(tmp_path, n=2)
    write_model(tmp_path / "patch_run", tiny_model(), patch=32)

    def full(f, arr):
        f.write(b"partial")              # a write that stops half-way
        raise OSError(errno.ENOSPC, "No space left on device", f.name)

    monkeypatch.setattr(images, "write_heatmap_png", full)
    out = tmp_path / "hm"
    assert main(["heatmaps", str(table), "--patch-model", str(tmp_path / "patch_run"), "--out", str(out),
                 "--stride", "10", "--quiet", "--workers", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "No space left" in err[0]
    assert not [p for p in (out / "maps").iterdir() if ".tmp" in p.name]     # no temporary file left
    assert not list((out / "maps").glob("*.png"))                             # and no half-written map
