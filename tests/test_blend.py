"""Gradient blending: the offline weight estimate on hand-written curves, the blended loss, the held-out V,
and a tiny end-to-end estimate + blended run (docs/regularizers.md)."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mvmammo.cli import main
from mvmammo.config import RegularizerConfig, resolve
from mvmammo.training.methods.blend import averaged_terms, blend_terms, blend_weights, swap_views, weights_for
from mvmammo.training.holdout import split_holdout
from mvmammo.training.loop import train
from mvmammo.training.tasks import get_task

from conftest import tiny_overrides


def _curve(loss_t, loss_v, auc_t=None, auc_v=None):
    n = len(loss_t)
    return {"loss_T": loss_t, "loss_V": loss_v, "auc_T": auc_t or [0.5] * n, "auc_V": auc_v or [0.5] * n}


def test_weights_from_hand_written_loss_curves():
    curves = {
        # dG = 1.0 - 0.8 = 0.2, dO = (0.8 - 0.5) - (1.0 - 1.0) = 0.3 -> w = 0.2 / 0.09
        "cc": _curve([1.0, 0.7, 0.5], [1.0, 0.9, 0.8]),
        # dG = 0.4, dO = (0.6 - 0.2) - 0 = 0.4 -> w = 0.4 / 0.16
        "mlo": _curve([1.0, 0.5, 0.2], [1.0, 0.8, 0.6]),
        # dG = 0.3, dO = (0.7 - 0.6) - (1.0 - 0.9) = 0.0 -> dO^2 floored; w = 0.3 / floor
        "joint": _curve([0.9, 0.8, 0.6], [1.0, 0.9, 0.7]),
    }
    # With a floor that does not bind elsewhere, the head that did not overfit takes (almost) everything.
    w = blend_weights(curves, "loss", (0, 2))
    assert sum(w.values()) == pytest.approx(1.0)
    assert w["joint"] > 0.999
    # With a larger floor the arithmetic is visible: raw weights 0.2/0.09, 0.4/0.16, 0.3/0.01 (floored).
    raw = {"cc": 0.2 / 0.09, "mlo": 0.4 / 0.16, "joint": 0.3 / 0.01}
    total = sum(raw.values())
    w = blend_weights(curves, "loss", (0, 2), min_do2=0.01)
    assert w == pytest.approx({k: v / total for k, v in raw.items()})
    terms = blend_terms(curves, "loss", (0, 2))
    assert terms["cc"]["dG"] == pytest.approx(0.2) and terms["cc"]["dO"] == pytest.approx(0.3)
    assert terms["joint"]["dO"] == pytest.approx(0.0, abs=1e-12)


def test_negative_generalisation_gain_gets_zero_weight_and_windows_index_epochs():
    curves = {
        "cc": _curve([1.0, 0.8, 0.6], [1.0, 0.9, 0.8]),    # window (1, 2): dG 0.1, dO (0.2) - (0.1) = 0.1
        "mlo": _curve([1.0, 0.5, 0.2], [1.0, 0.8, 0.9]),   # window (1, 2): dG -0.1 (V loss rose) -> 0
        "joint": _curve([1.0, 0.8, 0.6], [1.0, 0.9, 0.7]),  # window (1, 2): dG 0.2, dO 0.1 - 0.1 = 0 -> floor
    }
    w = blend_weights(curves, "loss", (1, 2), min_do2=0.04)
    assert w["mlo"] == 0.0
    assert w["cc"] == pytest.approx((0.1 / 0.04) / (0.1 / 0.04 + 0.2 / 0.04))
    # Nobody generalised: equal weights rather than 0/0.
    flat = {k: _curve([1.0, 0.9], [1.0, 1.1]) for k in ("cc", "mlo", "joint")}
    assert blend_weights(flat, "loss", (0, 1)) == pytest.approx({"cc": 1 / 3, "mlo": 1 / 3, "joint": 1 / 3})
    with pytest.raises(ValueError, match="covers epochs 0..2"):
        blend_weights(curves, "loss", (0, 5))


def test_auc_metric_uses_one_minus_auc():
    curves = {
        "cc": _curve([1] * 3, [1] * 3, auc_t=[0.5, 0.8, 0.9], auc_v=[0.5, 0.7, 0.75]),
        "mlo": _curve([1] * 3, [1] * 3, auc_t=[0.5, 0.9, 1.0], auc_v=[0.5, 0.6, 0.55]),
        "joint": _curve([1] * 3, [1] * 3, auc_t=[0.5, 0.7, 0.8], auc_v=[0.5, 0.7, 0.8]),
    }
    t = blend_terms(curves, "auc", (0, 2), min_do2=1e-4)
    # cc: 1 - AUC on V falls 0.5 -> 0.25 (dG 0.25); gap (0.25 - 0.1) - 0 = 0.15
    assert t["cc"]["dG"] == pytest.approx(0.25) and t["cc"]["dO"] == pytest.approx(0.15)
    assert t["mlo"]["dG"] == pytest.approx(0.05) and t["mlo"]["dO"] == pytest.approx(0.45)
    assert t["joint"]["dO"] == pytest.approx(0.0, abs=1e-12)
    curves["cc"]["auc_V"][2] = float("nan")
    with pytest.raises(ValueError, match="undefined"):
        blend_terms(curves, "auc", (0, 2))


def test_validation_estimate_averages_per_epoch_weights():
    # Appendix C: weights per one-epoch window, averaged over the window. By hand, min_do2 = 0.01:
    #   epoch 1 (0 -> 1): cc dG 0.1, dO (0.1) - 0 -> 0.1/0.01 = 10; mlo dG 0.2, dO 0.2 -> 0.2/0.04 = 5;
    #                     joint dG 0.1, dO 0 -> floor: 0.1/0.01 = 10.   Normalised: 0.4, 0.2, 0.4.
    #   epoch 2 (1 -> 2): cc dG 0.1, dO 0.2 - 0.1 = 0.1 -> 10; mlo dG -0.1 -> 0;
    #                     joint dG 0.3, dO 0.1 - 0 = 0.1 -> 30.   Normalised: 0.25, 0, 0.75.
    curves = {
        "cc": _curve([1.0, 0.8, 0.6], [1.0, 0.9, 0.8]),
        "mlo": _curve([1.0, 0.6, 0.4], [1.0, 0.8, 0.9]),
        "joint": _curve([1.0, 0.9, 0.5], [1.0, 0.9, 0.6]),
    }
    w = blend_weights(curves, "loss", (0, 2), min_do2=0.01, estimate="validation")
    assert w == pytest.approx({"cc": (0.4 + 0.25) / 2, "mlo": (0.2 + 0.0) / 2, "joint": (0.4 + 0.75) / 2})
    assert sum(w.values()) == pytest.approx(1.0)
    t = averaged_terms(curves, "loss", (0, 2), min_do2=0.01)
    assert t["mlo"]["dG"] == pytest.approx(0.1) and t["cc"]["epochs"] == 2  # dG over the whole window
    # A one-epoch window is the end-point estimate itself.
    assert blend_weights(curves, "loss", (1, 2), 0.01, "validation") == pytest.approx(
        blend_weights(curves, "loss", (1, 2), 0.01, "holdout"))
    with pytest.raises(ValueError, match="reg.blend_estimate='train'"):
        blend_weights(curves, "loss", (0, 2), estimate="train")


def test_blended_loss_is_the_weighted_sum_of_the_head_losses():
    torch.manual_seed(0)
    out = {"logits": torch.randn(6, 2), "aux_logits_cc": torch.randn(6, 2), "aux_logits_mlo": torch.randn(6, 2)}
    batch = {"benign": torch.tensor([0, 1, 0, 0, 1, 0]), "malignant": torch.tensor([1, 0, 0, 1, 1, 0])}
    y = torch.stack([batch["benign"], batch["malignant"]], 1).float()

    def head(z):  # benign BCE + malignant BCE, each a batch mean
        return F.binary_cross_entropy_with_logits(z, y, reduction="none").mean(0).sum()

    cfg = resolve("default", ["reg.blend=fixed", "reg.blend_weights=(0.2, 0.5, 0.3)"])
    losses = get_task("blend")(out, batch, cfg)
    expected = 0.2 * head(out["aux_logits_cc"]) + 0.5 * head(out["aux_logits_mlo"]) + 0.3 * head(out["logits"])
    assert float(losses["loss"]) == pytest.approx(float(expected), rel=1e-6)
    assert float(losses["loss_cc"]) == pytest.approx(float(head(out["aux_logits_cc"])), rel=1e-6)
    # Weights are normalised (so (1, 1, 1) means equal) and can be swapped between the views.
    eq = weights_for(RegularizerConfig(blend="fixed", blend_weights=(1.0, 1.0, 1.0)))
    assert eq == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    sw = weights_for(RegularizerConfig(blend="fixed", blend_weights=(0.2, 0.5, 0.3), blend_swap_views=True))
    assert sw == pytest.approx((0.5, 0.2, 0.3))
    assert swap_views({"cc": 1, "mlo": 2, "joint": 3}) == {"cc": 2, "mlo": 1, "joint": 3}
    with pytest.raises(ValueError, match="model.aux_heads=true"):
        get_task("blend")({"logits": out["logits"]}, batch, cfg)


def test_holdout_is_by_patient_stratified_and_deterministic():
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(100), 2).astype(str)  # two breasts each
    labels = np.zeros((200, 2), dtype=int)
    labels[rng.choice(200, 30, replace=False), 1] = 1
    rows = np.arange(200) + 1000
    t, v = split_holdout(patients, labels, rows, 0.2, seed=5)
    assert len(np.intersect1d(t, v)) == 0 and len(t) + len(v) == 200
    pt, pv = set(patients[t - 1000]), set(patients[v - 1000])
    assert not pt & pv and len(pv) == pytest.approx(20, abs=2)
    mal_patients = set(patients[labels[:, 1] == 1])
    assert len(pv & mal_patients) == pytest.approx(0.2 * len(mal_patients), abs=1)
    assert np.array_equal(v, split_holdout(patients, labels, rows, 0.2, seed=5)[1])
    assert not np.array_equal(v, split_holdout(patients, labels, rows, 0.2, seed=6)[1])
    assert len(split_holdout(patients, labels, rows, 0.0, seed=5)[1]) == 0


def test_end_to_end_estimate_then_blended_run(tiny_cohort, tmp_path, capsys):
    common = tiny_overrides(tiny_cohort, tmp_path / "unused", **{
        "model.aux_heads": "true", "reg.blend_epochs": "(0, 1)", "reg.blend_holdout": "0.25",
        "run.grad_norms": "false", "run.max_steps": 3})  # 3 steps per run: the test checks plumbing
    est = tmp_path / "estimate"
    assert main(["blend-estimate", "--out", str(est), *common]) == 0
    printed = capsys.readouterr().out
    assert "w_joint" in printed and "blend_weights.json" in printed
    result = json.loads((est / "blend_weights.json").read_text())
    w = result["weights"]
    assert set(w) == {"cc", "mlo", "joint"} and sum(w.values()) == pytest.approx(1.0)
    assert all(len(result["curves"][r]["loss_V"]) == 2 for r in ("cc", "mlo", "joint"))  # epochs 0 and 1
    metrics = [json.loads(x) for x in (est / "joint" / "metrics.jsonl").read_text().splitlines()]
    first = [m for m in metrics if m["kind"] == "epoch"][0]
    assert first["holdout_breasts"] > 0 and math.isfinite(first["holdout_loss"])
    assert "train_eval_loss" in first and "init_holdout_loss" in first

    cfg = resolve("default", [*common, f"run.out={tmp_path / 'blended'}", "optim.epochs=1", "reg.blend=offline",
                              f"reg.blend_weights_file={est / 'blend_weights.json'}"])
    train(cfg)
    used = json.loads((tmp_path / "blended" / "blend_weights.json").read_text())["weights"]
    assert used == pytest.approx(w)
    step = next(json.loads(x) for x in (tmp_path / "blended" / "metrics.jsonl").read_text().splitlines()
                if json.loads(x)["kind"] == "step")
    blended = used["cc"] * step["loss_cc"] + used["mlo"] * step["loss_mlo"] + used["joint"] * step["loss_joint"]
    assert step["loss"] == pytest.approx(blended, rel=1e-5)
    assert main(["blend-table", str(est), str(tmp_path / "blended")]) == 0
    assert "blended (loss [0, 1])" in capsys.readouterr().out
    # Without the auxiliary heads the blended run stops with a clear message.
    no_aux = resolve("default", [*common, f"run.out={tmp_path / 'no_aux'}", "model.aux_heads=false",
                                 "reg.blend=fixed"])
    with pytest.raises(ValueError, match="model.aux_heads=true"):
        train(no_aux)


def test_end_to_end_validation_estimate(tiny_cohort, tmp_path):
    from mvmammo.experiments.blend_estimate import estimate

    common = tiny_overrides(tiny_cohort, tmp_path / "unused", **{
        "model.aux_heads": "true", "reg.blend_epochs": "(0, 2)", "reg.blend_estimate": "validation",
        "run.grad_norms": "false", "optim.batch_size": 32, "optim.epochs": 2})
    cfg = resolve("default", common)
    est = tmp_path / "estimate_val"
    result = estimate(cfg, est)
    assert result["estimate"] == "validation" and sum(result["weights"].values()) == pytest.approx(1.0)
    metrics = [json.loads(x) for x in (est / "joint" / "metrics.jsonl").read_text().splitlines()]
    epochs = [m for m in metrics if m["kind"] == "epoch"]
    assert "holdout_loss" not in epochs[0]  # the whole training split trains; V is the validation split
    curves = result["curves"]["joint"]
    assert curves["loss_V"] == [epochs[0]["init_val_loss"]] + [e["val_loss"] for e in epochs]
    assert curves["loss_T"] == [epochs[0]["init_train_eval_loss"]] + [e["train_eval_loss"] for e in epochs]
    assert result["weights"] == pytest.approx(blend_weights(result["curves"], "loss", (0, 2), estimate="validation"))
    # A blended run reads it with the same estimate kind; another kind is one clear error.
    path = est / "blend_weights.json"
    ok = RegularizerConfig(blend="offline", blend_weights_file=str(path), blend_epochs=(0, 2),
                           blend_estimate="validation")
    assert weights_for(ok) == pytest.approx(tuple(result["weights"][r] for r in ("cc", "mlo", "joint")))
    with pytest.raises(ValueError, match="estimated with reg.blend_estimate=validation"):
        weights_for(RegularizerConfig(blend="offline", blend_weights_file=str(path), blend_epochs=(0, 2)))
