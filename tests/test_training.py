"""The training loop: exact resume after a kill, NaN handling, best/last checkpoints, a run that learns."""
import json
import math

import pytest
import torch

from mvmammo.config import resolve
from mvmammo.training import loop
from mvmammo.training.loop import TrainingDiverged, train

from conftest import tiny_overrides
from mvmammo.training.checkpoint import load as ckpt_load


def _epochs(run_dir):
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if x["kind"] == "epoch"], [x for x in lines if x["kind"] == "step"]


class _Kill:
    """Simulates a kill in the middle of an epoch (after a given optimizer step)."""

    def __init__(self, at_step):
        self.at_step = at_step

    def after_step(self, ctx):
        if ctx.step == self.at_step:
            raise KeyboardInterrupt


def test_exact_resume_after_kill(tiny_cohort, tmp_path):
    full = resolve("default", tiny_overrides(tiny_cohort, tmp_path / "full", **{"optim.epochs": 3}))
    train(full)
    killed = resolve("default", tiny_overrides(tiny_cohort, tmp_path / "killed", **{"optim.epochs": 3}))
    ep_full, steps_full = _epochs(tmp_path / "full")
    per_epoch = ep_full[0]["step"]
    with pytest.raises(KeyboardInterrupt):
        train(killed, hooks=[_Kill(per_epoch + 2)])  # dies inside epoch 2
    assert not (tmp_path / "killed" / "DONE").exists()
    train(killed)  # the same command again resumes from last.pt (end of epoch 1)
    ep_res, steps_res = _epochs(tmp_path / "killed")
    assert [e["epoch"] for e in ep_res] == [0, 1, 2]
    for a, b in zip(ep_full, ep_res):
        for key in ("train_loss", "val_auc_malignant", "val_auc_benign", "val_loss", "step"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key
    assert [s["step"] for s in steps_res] == [s["step"] for s in steps_full]
    w_full = ckpt_load(tmp_path / "full" / "last.pt")["model"]
    w_res = ckpt_load(tmp_path / "killed" / "last.pt")["model"]
    for k in w_full:
        assert torch.allclose(w_full[k].float(), w_res[k].float(), atol=1e-6), k


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_cohort, tmp_path, monkeypatch):
    cfg = resolve("default", tiny_overrides(tiny_cohort, tmp_path / "nan", **{"optim.epochs": 3}))
    train(resolve("default", tiny_overrides(tiny_cohort, tmp_path / "nan", **{"optim.epochs": 1})))
    good = ckpt_load(tmp_path / "nan" / "last.pt")
    real_task = loop.get_task("standard")

    def poisoned(out, batch, cfg=None):
        losses = real_task(out, batch, cfg)
        return dict(losses, loss=losses["loss"] * float("nan"))

    monkeypatch.setattr(loop, "get_task", lambda name: poisoned)
    with pytest.raises(TrainingDiverged) as err:
        train(cfg)
    msg = str(err.value)
    assert "loss is nan" in msg and "last.pt" in msg and "breasts" in msg
    kept = ckpt_load(tmp_path / "nan" / "last.pt")
    assert kept["epoch"] == good["epoch"] == 0
    for k in good["model"]:
        assert torch.equal(good["model"][k], kept["model"][k])


def test_changed_config_refuses_to_resume(tiny_cohort, tmp_path):
    train(resolve("default", tiny_overrides(tiny_cohort, tmp_path / "r", **{"optim.epochs": 1})))
    with pytest.raises(loop.ConfigMismatch):
        train(resolve("default", tiny_overrides(tiny_cohort, tmp_path / "r", **{"optim.lr": 0.5})))


def test_checkpoints_and_metrics(tiny_cohort, tmp_path):
    from mvmammo.analysis.hooks import hooks_for

    cfg = resolve("default", tiny_overrides(tiny_cohort, tmp_path / "m", **{"model.family": "split"}))
    run = train(cfg, hooks=hooks_for(cfg))  # gradient norms are an analysis hook the caller hands in
    for name in ("config.json", "git_revision.txt", "metrics.jsonl", "best.pt", "last.pt", "DONE"):
        assert (run / name).exists(), name
    epochs, steps = _epochs(run)
    best = ckpt_load(run / "best.pt")
    vals = [e["val_auc_malignant"] for e in epochs]
    assert best["val_auc_malignant"] == pytest.approx(max(v for v in vals if not math.isnan(v)))
    assert all("grad_norm_cc" in s and "grad_norm_mlo" in s for s in steps)
    last = ckpt_load(run / "last.pt")
    assert {"model", "optimizer", "epoch", "step", "best", "rng"} <= set(last)


@pytest.mark.slow
def test_small_run_learns_easy_preset(tmp_path):
    """End to end on the `easy` sanity preset: validation malignant AUC > 0.9."""
    from mvmammo.data.synthetic import generate_cohort

    generate_cohort(tmp_path / "c", preset="easy", breasts=400, size_cc=(64, 48), size_mlo=(64, 48), seed=11,
                    heatmaps=True, progress=False)
    cfg = resolve("default", tiny_overrides(tmp_path / "c" / "exams.csv", tmp_path / "run",
                                            **{"optim.epochs": 8, "model.width": 8, "optim.batch_size": 16}))
    run = train(cfg)
    epochs, _ = _epochs(run)
    assert max(e["val_auc_malignant"] for e in epochs) > 0.9, [e["val_auc_malignant"] for e in epochs]
