"""Shared fixtures: a tiny synthetic cohort and a tiny-run config (CPU, seconds)."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory):
    """A small synthetic cohort (balanced preset, 64x48 px): its exams.csv path."""
    from mvmammo.data.synthetic import generate_cohort

    out = tmp_path_factory.mktemp("cohort")
    generate_cohort(out, preset="balanced", breasts=160, size_cc=(64, 48), size_mlo=(64, 48), seed=3,
                    heatmaps=True, progress=False, workers=1)
    return out / "exams.csv"


def tiny_overrides(table, out, **extra) -> list[str]:
    base = {
        "data.table": str(table), "data.size_cc": "(64, 48)", "data.size_mlo": "(64, 48)",
        "data.cache_dir": str(out.parent / "_cache"), "model.width": "4", "optim.epochs": "2",
        "optim.batch_size": "8", "optim.lr": "1e-3", "run.out": str(out), "run.progress": "false", "run.tta": "2",
    }
    base.update({k: str(v) for k, v in extra.items()})
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture
def one_thread():
    """One intra-op thread: tiny convolutions on the 2 shared cores are many times slower with contending threads.
    Test files of small conv nets use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
