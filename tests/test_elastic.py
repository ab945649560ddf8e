"""Elastic training through the real `torchrun` command: a worker killed mid-epoch, the job restarted by torchrun
(--max-restarts), resumed from last.pt, ends with the same weights as an uninterrupted 2-worker run (CPU, gloo).

torchrun's c10d rendezvous keeps one store for the whole job; without a key prefix per attempt
(distributed.attempt_store) a restarted worker could read the killed attempt's gloo addresses and fail with
"connectFullMesh ... Connection refused" or hang, depending on which worker started first."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from conftest import tiny_overrides
from mvmammo.errors import MvError
from mvmammo.training import checkpoint as ckpt
from mvmammo.training.distributed import DistInfo, attempt_store

TIMEOUT_S = 300  # one torchrun job; on this 2-core machine a job takes 15-40 s


def _torchrun(overrides: list[str], env_extra: dict, log_dir: Path) -> subprocess.CompletedProcess:
    # Rendezvous port 0: the agent binds a free port itself (no pick-then-release race with other tests).
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0", "--max-restarts", "2",
           "--monitor-interval", "0.5", "--log-dir", str(log_dir), "--redirects", "3", "--tee", "3",
           "-m", "mvmammo", "train", *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1", **env_extra)
    for k in ("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK"):
        env.pop(k, None)  # the shared agent store is the case under test
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # SIGTERM lets the agent stop its workers (they run in their own sessions and would otherwise outlive
        # it, holding our pipes open); SIGKILL only if it does not exit.
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        raise AssertionError(f"torchrun did not finish in {TIMEOUT_S} s:\n" + _tail(out + err)) from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _tail(text: str) -> str:
    lines = [ln.split("]:", 1)[1] if ln.startswith("[default") and "]:" in ln else ln for ln in text.splitlines()]
    lines = [ln for ln in lines if "Warning" not in ln and "all_reduce(" not in ln]
    errors = [ln for ln in lines if ln.startswith(("error:", "resuming", "run folder")) or "connectFullMesh" in ln]
    return "\n".join(errors + ["..."] + lines[-25:])


def _attempts(log_dir: Path) -> list[str]:
    """The attempts torchrun started (its --log-dir holds RUN_ID/attempt_N/RANK/{stdout,stderr}.log)."""
    return sorted({p.name for p in log_dir.rglob("attempt_*") if p.is_dir()})


def test_killed_worker_restarts_and_matches_the_uninterrupted_run(tiny_cohort, tmp_path):
    extra = {"optim.epochs": 2, "optim.batch_size": 8, "model.input_noise_std": 0.0, "run.device": "cpu",
             "run.grad_norms": "false", "run.prefetch": 0}
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    r = _torchrun(tiny_overrides(tiny_cohort, ref, **extra), {}, tmp_path / "logs_ref")
    assert r.returncode == 0, _tail(r.stdout + r.stderr)
    steps_per_epoch = ckpt.load(ref / "last.pt")["step"] // 2
    kill_at = steps_per_epoch + steps_per_epoch // 2  # rank 1 dies in the middle of the second epoch
    logs = tmp_path / "logs_killed"
    k = _torchrun(tiny_overrides(tiny_cohort, killed, **extra), {"MVMAMMO_FAULT_KILL": f"1:{kill_at}"}, logs)
    log = k.stdout + k.stderr
    assert k.returncode == 0, _tail(log)
    assert "exitcode: -9" in log, _tail(log)  # the agent saw rank 1's SIGKILL
    # One restart, and it reconnected at once: the stale-store failure showed as attempt_1 failing, and the
    # job passing only when attempt_2 happened to win the race.
    assert _attempts(logs) == ["attempt_0", "attempt_1"], (_attempts(logs), _tail(log))
    resumed = [p.read_text() for p in logs.rglob("attempt_1/*/stdout.log")]
    assert len(resumed) == 2 and all("resuming" in t for t in resumed), _tail(log)  # both ranks read last.pt
    a, b = ckpt.load(ref / "last.pt"), ckpt.load(killed / "last.pt")
    assert a["epoch"] == b["epoch"] == 1 and a["step"] == b["step"] == 2 * steps_per_epoch
    for name, v in a["model"].items():
        w = b["model"][name]
        assert torch.equal(v, w) if not v.dtype.is_floating_point else torch.allclose(v, w, atol=1e-6), name


def _agent_env(monkeypatch, port: int, attempt: int, nodes: int = 1, max_restarts: int = 2) -> None:
    """The variables torchrun's agent gives a worker when it shares its store (TORCHELASTIC_USE_AGENT_STORE)."""
    for k, v in {"TORCHELASTIC_USE_AGENT_STORE": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                 "TORCHELASTIC_RESTART_COUNT": str(attempt), "TORCHELASTIC_MAX_RESTARTS": str(max_restarts),
                 "GROUP_WORLD_SIZE": str(nodes)}.items():
        monkeypatch.setenv(k, v)


def test_each_attempt_sees_only_its_own_keys(monkeypatch):
    # The agent's store outlives the workers: a key the killed attempt wrote must be invisible to the next one.
    server = dist.TCPStore("127.0.0.1", 0, 1, is_master=True, wait_for_workers=False)
    info, timeout = DistInfo(rank=0, world=2), timedelta(seconds=10)
    _agent_env(monkeypatch, server.port, attempt=0)
    first = attempt_store(info, timeout)
    first.set("default_pg/0//cpu//0/1", "127.0.0.1:49024")  # a gloo address key, as init_process_group writes
    _agent_env(monkeypatch, server.port, attempt=1)
    second = attempt_store(info, timeout)
    assert not second.check(["default_pg/0//cpu//0/1"])
    assert server.check(["mvmammo/attempt_0/default_pg/0//cpu//0/1"])  # it is there, under attempt 0's prefix
    second.set("default_pg/0//cpu//0/1", "127.0.0.1:50000")
    assert first.get("default_pg/0//cpu//0/1") == b"127.0.0.1:49024"


def test_several_nodes_with_restarts_need_an_unshared_store(monkeypatch):
    # Agents on different nodes count restarts separately, so the per-attempt prefix would differ between nodes.
    _agent_env(monkeypatch, 1, attempt=0, nodes=2, max_restarts=3)
    with pytest.raises(MvError, match="TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1"):
        attempt_store(DistInfo(rank=0, world=8), timedelta(seconds=1))
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "False")  # what TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 gives
    assert attempt_store(DistInfo(rank=0, world=8), timedelta(seconds=1)) is None
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE")  # not under torchrun: plain env://
    assert attempt_store(DistInfo(rank=0, world=8), timedelta(seconds=1)) is None
