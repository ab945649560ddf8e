"""torchrun-style data parallelism on the CPU (gloo): 2 processes with half the batch each train the same
model as 1 process with the whole batch (global-batch BatchNorm, identical boxes, averaged gradients)."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import tiny_overrides
from mvmammo.config import resolve
from mvmammo.training import distributed
from mvmammo.training.loop import train

WORKER = """
import json, sys, torch
torch.set_num_threads(1)
from mvmammo.config import resolve
from mvmammo.training.loop import train
train(resolve("default", json.loads(sys.argv[1])))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(overrides: list[str], world: int) -> None:
    port = _free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        if world == 1:
            for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
                env.pop(k)
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(overrides)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-3000:]


def test_two_processes_match_one_with_the_whole_batch(tiny_cohort, tmp_path):
    extra = {"optim.epochs": 1, "optim.batch_size": 8, "model.input_noise_std": 0.0, "run.max_steps": 2,
             "run.device": "cpu", "run.grad_norms": "false"}
    one, two = tmp_path / "one", tmp_path / "two"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # the single-process reference runs here (no torchrun variables): one interpreter start saved
        train(resolve("default", tiny_overrides(tiny_cohort, one, **extra)))
    finally:
        torch.set_num_threads(threads)
    _launch(tiny_overrides(tiny_cohort, two, **extra), 2)
    a = torch.load(one / "last.pt", weights_only=False)
    b = torch.load(two / "last.pt", weights_only=False)
    assert a["step"] == b["step"] == 2
    for k, v in a["model"].items():
        w = b["model"][k]
        if v.dtype.is_floating_point:
            assert torch.allclose(v, w, rtol=1e-3, atol=1e-5), (k, (v - w).abs().max())
        else:
            assert torch.equal(v, w), k
    # rank 0 alone wrote the run folder: one metrics line per step and per epoch, as the single process.
    lines_a = (one / "metrics.jsonl").read_text().splitlines()
    lines_b = (two / "metrics.jsonl").read_text().splitlines()
    assert len(lines_a) == len(lines_b)
    assert (two / "DONE").exists() and (two / "best.pt").exists()


def test_shard_bounds_cover_the_batch():
    for n in range(1, 12):
        for world in (1, 2, 3, 4):
            parts = [distributed.shard_bounds(n, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(parts[i][1] == parts[i + 1][0] for i in range(world - 1))
    info = distributed.DistInfo(rank=0, world=2)
    chunks = [np.arange(8), np.arange(8, 9)]
    assert [len(c) for c in distributed.global_batches(chunks, info, 8)] == [8]  # a 1-row batch can't split
    with pytest.raises(ValueError, match="multiple of the world size"):
        distributed.global_batches(chunks, distributed.DistInfo(rank=0, world=3), 8)
