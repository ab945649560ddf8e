"""Exact-resume check shared by the balancing methods' tests (used by tests/test_method_resume.py and the method tests): a run of
``epochs`` epochs and a run stopped after ``epochs - 1`` and resumed end with identical weights."""
from __future__ import annotations

import torch

from conftest import tiny_overrides
from mvmammo.config import resolve
from mvmammo.training import checkpoint as ckpt
from mvmammo.training.loop import train


def assert_exact_resume(tiny_cohort, tmp_path, over: dict, method: str, epochs: int = 2) -> None:
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise-equal reductions in both runs
    try:
        train(resolve("default", tiny_overrides(tiny_cohort, tmp_path / "full", **{**over, "optim.epochs": epochs})))
        cut = {**over, "optim.epochs": epochs - 1}
        train(resolve("default", tiny_overrides(tiny_cohort, tmp_path / "cut", **cut)))
        assert ckpt.load(tmp_path / "cut" / "last.pt")["methods"].get(method)  # the state went into last.pt
        train(resolve("default", tiny_overrides(tiny_cohort, tmp_path / "cut", **{**over, "optim.epochs": epochs})))
    finally:
        torch.set_num_threads(old)
    a, b = ckpt.load(tmp_path / "full" / "last.pt"), ckpt.load(tmp_path / "cut" / "last.pt")
    assert a["step"] == b["step"]
    for name, v in a["model"].items():
        torch.testing.assert_close(b["model"][name], v, rtol=0, atol=0, msg=name)
