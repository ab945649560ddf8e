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
from test_regularizers import _fake_uni_run
from mvmammo.config import resolve
from mvmammo.models.registry import build_model
from mvmammo.training import distributed
from mvmammo.training.loop import train
from mvmammo.training.methods.pretrain import apply_finetune, is_frozen_batchnorm
from mvmammo.training.checkpoint import load as ckpt_load

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
    a = ckpt_load(one / "last.pt")
    b = ckpt_load(two / "last.pt")
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


def _bn_stats(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}


def test_frozen_batchnorm_survives_conversion():
    # Head-only fine-tuning freezes every column; converting BatchNorm for DDP (SyncBatchNorm as on CUDA,
    # the all-reduce version as on gloo) must not bring training-mode statistics back.
    cfg = resolve("default", ["model.width=4", "reg.finetune=head", "run.progress=false"])
    for convert in (torch.nn.SyncBatchNorm.convert_sync_batchnorm, lambda m: distributed.convert_batchnorm(m, False)):
        torch.manual_seed(0)
        model = build_model(cfg.model, in_channels=3)
        apply_finetune(model, cfg)
        before = _bn_stats(model)
        n_frozen = sum(is_frozen_batchnorm(m) for m in model.modules())
        model = convert(model)
        bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        assert n_frozen == len(bns) > 20 and all(type(m) is not torch.nn.BatchNorm2d for m in bns)
        model.train()
        out = model(torch.randn(2, 3, 64, 48), torch.randn(2, 3, 64, 48))
        out["logits"].sum().backward()  # the head trains
        assert all(not m.training for m in bns)
        after = _bn_stats(model)
        assert all(torch.equal(before[k], after[k]) for k in before)


def test_head_only_finetune_keeps_batchnorm_frozen_on_two_processes(tiny_cohort, tmp_path):
    cc = _fake_uni_run(tmp_path / "uni_cc", "uni_cc", seed=1)
    mlo = _fake_uni_run(tmp_path / "uni_mlo", "uni_mlo", seed=2)
    out = tmp_path / "ft2"
    overrides = tiny_overrides(tiny_cohort, out, **{
        "optim.epochs": 1, "reg.pretrained_cc": tmp_path / "uni_cc", "reg.pretrained_mlo": tmp_path / "uni_mlo",
        "reg.finetune": "head", "run.max_steps": 3, "run.device": "cpu", "run.grad_norms": "false",
        "run.sync_bn": "true"})
    _launch(overrides, 2)
    after = ckpt_load(out / "last.pt")["model"]
    source = {**{k: v for k, v in cc.items() if not k.startswith("cc.head")},
              **{k: v for k, v in mlo.items() if not k.startswith("mlo.head")}}
    stats = [k for k in source if "running_" in k]
    assert len(stats) > 40
    for k, v in source.items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(after[k], v), k  # frozen weights and their BatchNorm statistics
    cfg = resolve("default", overrides)
    torch.manual_seed(cfg.run.seed)  # the loop's initialisation, to show that the head did train
    first = build_model(cfg.model, in_channels=3)
    assert not torch.equal(after["shared.head.weight"], first.state_dict()["shared.head.weight"])
