"""Methods that carry state across epochs (MLA's projector, greedy learning's speeds, running means and window)
store it in last.pt: a run stopped after epoch 1 and resumed ends with the weights of the uninterrupted run."""
from __future__ import annotations

import pytest
import torch

from conftest import tiny_overrides
from mvmammo.config import resolve
from mvmammo.training import checkpoint as ckpt
from mvmammo.training.loop import train


@pytest.mark.parametrize("method,extra", [
    ("mla", {}),
    ("greedy", {"methods.greedy.start_epoch": 0, "methods.greedy.epsilon": 0.0, "methods.greedy.window": 3}),
])
def test_resumed_method_state_matches_the_uninterrupted_run(tiny_cohort, tmp_path, method, extra):
    over = {"reg.method": method, "model.input_noise_std": 0.0, "run.prefetch": 0, "optim.batch_size": 8, **extra}
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(resolve("default", tiny_overrides(tiny_cohort, tmp_path / "full", **{"optim.epochs": 2, **over})))
        train(resolve("default", tiny_overrides(tiny_cohort, tmp_path / "cut", **{"optim.epochs": 1, **over})))
        state = ckpt.load(tmp_path / "cut" / "last.pt")
        assert method in state["methods"]  # the method's state went into last.pt
        train(resolve("default", tiny_overrides(tiny_cohort, tmp_path / "cut", **{"optim.epochs": 2, **over})))
    finally:
        torch.set_num_threads(old)
    a, b = ckpt.load(tmp_path / "full" / "last.pt"), ckpt.load(tmp_path / "cut" / "last.pt")
    assert a["step"] == b["step"]
    for name, v in a["model"].items():
        torch.testing.assert_close(b["model"][name], v, rtol=0, atol=0, msg=name)
