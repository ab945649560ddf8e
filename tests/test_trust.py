"""Trust: checkpoints are data, one run per folder, torn metric lines, divergence, configs checked first,
full disks. Every command-line failure here is one `error:` line and no traceback."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from mvmammo import runlog
from mvmammo.cli import main
from mvmammo.config import resolve
from mvmammo.training import checkpoint as ckpt
from mvmammo.training.loop import TrainingDiverged, train

from conftest import tiny_overrides
from disk import small_tmpfs


class Payload:
    """Unpickling this would create ``marker`` (what a malicious checkpoint would do, harmlessly)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(path, marker, base=None):
    """Overwrite checkpoint ``path`` with its own contents plus a code-running payload."""
    state = dict(base or {})
    state.setdefault("model", {})
    state["evil"] = Payload(marker)
    torch.save(state, path)


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err


def assert_one_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, err
    assert "Traceback" not in err
    return errors[0]


@pytest.fixture(scope="module")
def trained(tiny_cohort, tmp_path_factory):
    """A finished one-epoch tiny run (copied per test, never modified)."""
    out = tmp_path_factory.mktemp("trained") / "joint-s0"
    train(resolve("default", tiny_overrides(tiny_cohort, out, **{"optim.epochs": 1})))
    return out


def _copy(trained, tmp_path, name="run"):
    dst = tmp_path / name
    shutil.copytree(trained, dst)
    return dst


# ---- 1. checkpoints are data ---------------------------------------------------------------------------------

def test_evaluate_refuses_a_payload_in_best(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    marker = tmp_path / "pwned"
    plant(run / "best.pt", marker, ckpt.load(trained / "best.pt"))
    code, err = run_cli(capsys, "evaluate", run)
    assert code == 1 and not marker.exists()
    line = assert_one_error(err)
    assert "best.pt" in line and "never runs code" in line


def test_resume_refuses_a_payload_in_last(trained, tiny_cohort, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    marker = tmp_path / "pwned"
    plant(run / "last.pt", marker, ckpt.load(trained / "last.pt"))
    code, err = run_cli(capsys, "train", *tiny_overrides(tiny_cohort, run, **{"optim.epochs": 2}))
    assert code == 1 and not marker.exists()
    assert "last.pt" in assert_one_error(err)


def test_pretrained_columns_refuse_a_payload(trained, tiny_cohort, tmp_path, capsys):
    uni = _copy(trained, tmp_path, "uni")
    cfg = json.loads((uni / "config.json").read_text())
    cfg["model"]["family"] = "uni_cc"
    (uni / "config.json").write_text(json.dumps(cfg))
    marker = tmp_path / "pwned"
    plant(uni / "best.pt", marker)
    code, err = run_cli(capsys, "train", *tiny_overrides(tiny_cohort, tmp_path / "joint", **{
        "optim.epochs": 1, "reg.pretrained_cc": uni}))
    assert code == 1 and not marker.exists()
    assert "best.pt" in assert_one_error(err)


def test_analyze_refuses_a_payload(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    marker = tmp_path / "pwned"
    plant(run / "best.pt", marker, ckpt.load(trained / "best.pt"))
    code, err = run_cli(capsys, "analyze", "utilization", run, "--no-probes", "--permutations", "1")
    assert code == 1 and not marker.exists()
    assert "best.pt" in assert_one_error(err)


def test_predict_refuses_a_payload(trained, tiny_cohort, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    marker = tmp_path / "pwned"
    plant(run / "best.pt", marker, ckpt.load(trained / "best.pt"))
    code, err = run_cli(capsys, "predict", run, "--table", tiny_cohort, "--out", tmp_path / "p.csv",
                        "--no-progress")
    assert code == 1 and not marker.exists() and not (tmp_path / "p.csv").exists()
    assert "best.pt" in assert_one_error(err)


def test_checkpoint_load_is_weights_only_and_reads_plain_rng(tmp_path):
    import random

    import numpy as np

    ckpt.save_atomic({"model": {"w": torch.ones(2)}, "rng": ckpt.rng_state()}, tmp_path / "a.pt")
    state = ckpt.load(tmp_path / "a.pt")
    expected = (np.random.rand(), random.random(), torch.rand(1).item())
    ckpt.set_rng_state(state["rng"])
    assert (np.random.rand(), random.random(), torch.rand(1).item()) == expected
    (tmp_path / "cut.pt").write_bytes((tmp_path / "a.pt").read_bytes()[:64])
    with pytest.raises(ckpt.CheckpointError, match="cut.pt: not a readable checkpoint"):
        ckpt.load(tmp_path / "cut.pt")


# ---- 2. one run per folder -------------------------------------------------------------------------------------

HOLDER = ("import sys, time; from mvmammo.runlock import hold_run; cm = hold_run(sys.argv[1], 'train'); "
          "cm.__enter__(); print('held', flush=True); time.sleep(120)")


def test_second_train_on_a_folder_in_use_refuses_and_a_dead_holder_does_not_block(tiny_cohort, tmp_path, capsys):
    run = tmp_path / "busy"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.time()
        code, err = run_cli(capsys, "train", *tiny_overrides(tiny_cohort, run, **{"optim.epochs": 1}))
        assert code == 1 and time.time() - t0 < 30  # refuses at once, does not wait
        line = assert_one_error(err)
        assert f"pid {holder.pid}" in line and "in use" in line
        assert not (run / "config.json").exists()  # nothing of the second run was written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The killed holder's lock file is still there, but the OS released the lock with the process.
    from mvmammo.runlock import hold_run

    with hold_run(run, "train"):
        assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()


# ---- 3. torn metric lines, strict JSON ---------------------------------------------------------------------------

def test_resume_drops_a_torn_metrics_line_and_writes_strict_json(trained, tiny_cohort, tmp_path):
    run = _copy(trained, tmp_path)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"kind": "step", "epoch": 1, "step": 9, "loss": 0.6')  # killed mid-write
    train(resolve("default", tiny_overrides(tiny_cohort, run, **{"optim.epochs": 2})))

    def no_constants(name):
        raise AssertionError(f"non-JSON constant {name} in metrics.jsonl")

    lines = (run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(ln, parse_constant=no_constants) for ln in lines]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [0, 1]


def test_runlog_writes_null_for_nan_and_skips_torn_lines(tmp_path):
    assert runlog.dumps({"a": float("nan"), "b": [float("inf"), 1.5], "c": 2}) == '{"a": null, "b": [null, 1.5], "c": 2}'
    p = tmp_path / "m.jsonl"
    p.write_text('{"epoch": 0, "x": 1}\n{"epoch": 1, "x": 2}\n{"epoch": 2, "x"')
    assert runlog.read(p) == ([{"epoch": 0, "x": 1}, {"epoch": 1, "x": 2}], 1)
    assert runlog.truncate(p, 1) == 1
    assert p.read_text() == '{"epoch": 0, "x": 1}\n'


# ---- 7. configs checked before anything is written ---------------------------------------------------------------

@pytest.mark.parametrize("override, key", [
    ("optim.lr=0", "optim.lr"), ("optim.lr=nan", "optim.lr"), ("optim.lr=inf", "optim.lr"),
    ("optim.batch_size=0", "optim.batch_size"), ("model.family=resnet", "model.family"),
    ("model.backbone=vit", "model.backbone"), ("run.tta=-1", "run.tta"), ("data.sampling=patient", "data.sampling"),
    ("reg.moddrop_cc=1.5", "reg.moddrop_cc"),
])
def test_invalid_config_is_refused_before_a_run_folder_exists(tiny_cohort, tmp_path, capsys, override, key):
    run = tmp_path / "never"
    code, err = run_cli(capsys, "train", *tiny_overrides(tiny_cohort, run), override)
    assert code == 2
    assert key in assert_one_error(err)
    assert not run.exists()


def test_family_error_lists_the_valid_names(tiny_cohort, tmp_path, capsys):
    code, err = run_cli(capsys, "train", *tiny_overrides(tiny_cohort, tmp_path / "x"), "model.family=nope")
    line = assert_one_error(err)
    assert all(name in line for name in ("uni_cc", "uni_mlo", "joint", "shared", "split"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_on_a_machine_without_one(tiny_cohort, tmp_path, capsys):
    code, err = run_cli(capsys, "train", *tiny_overrides(tiny_cohort, tmp_path / "x"), "run.device=cuda")
    assert code == 2 and "no CUDA GPU" in assert_one_error(err)


# ---- 8. divergence ----------------------------------------------------------------------------------------------

def test_a_finite_explosion_stops_training(tiny_cohort, tmp_path):
    run = tmp_path / "boom"
    with pytest.raises(TrainingDiverged, match="diverged") as info:
        train(resolve("default", tiny_overrides(tiny_cohort, run, **{"optim.lr": "1e6", "optim.epochs": 3})))
    msg = str(info.value)
    assert ("last.pt" in msg) == (run / "last.pt").exists()
    assert not (run / "DONE").exists()


def test_explosion_limit_from_the_first_epoch():
    from mvmammo.training.loop import EXPLOSION_FACTOR, _limit

    assert _limit(None, []) == float("inf")
    assert _limit(None, [(1, {"loss": torch.tensor(2.0)}, {})]) == pytest.approx(2.0 * EXPLOSION_FACTOR)
    assert _limit(1.5, [(1, {"loss": torch.tensor(9.0)}, {})]) == pytest.approx(1.5 * EXPLOSION_FACTOR)


# ---- 5. full disk ------------------------------------------------------------------------------------------------

def test_checkpoint_write_failure_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.save_atomic({"model": {"w": torch.zeros(3)}}, path)
    good = path.read_bytes()

    import builtins
    import errno

    real_open = builtins.open

    class FullFile:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def fake_open(file, mode="r", *a, **k):
        f = real_open(file, mode, *a, **k)
        return FullFile(f) if str(file).endswith(".tmp") else f

    monkeypatch.setattr(builtins, "open", fake_open)
    with pytest.raises(ckpt.CheckpointError, match="last.pt: could not write checkpoint: the disk is full"):
        ckpt.save_atomic({"model": {"w": torch.ones(3)}}, path)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_checkpoint_on_a_real_full_disk(tmp_path):
    with small_tmpfs(tmp_path / "small", "1m") as disk:
        path = disk / "last.pt"
        ckpt.save_atomic({"model": {"w": torch.zeros(10)}}, path)
        good = path.read_bytes()
        with pytest.raises(ckpt.CheckpointError, match="disk is full"):
            ckpt.save_atomic({"model": {"w": torch.zeros(2_000_000)}}, path)  # 8 MB into 1 MB
        assert path.read_bytes() == good
        assert sorted(p.name for p in disk.iterdir()) == ["last.pt"]
