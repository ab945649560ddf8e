"""OGM-GE (training/methods/ogm_ge.py): k for a given score ratio, the class-balanced score of a fixed batch,
the modulated gradients of each family, the epoch window, config problems, and a tiny training run."""
import json
import math
from types import SimpleNamespace

import pytest
import torch

from mvmammo.config import resolve
from mvmammo.models import build_model
from mvmammo.training.loop import train
from mvmammo.training.methods import METHODS, method_problems
from mvmammo.training.methods.ogm_ge import OGMGEModulation, ogm_coefficients, ogm_scores

from conftest import tiny_overrides

L3 = math.log(3.0)  # sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4, sigmoid(0) = 1/2


def test_registered():
    assert "ogm_ge" in METHODS


def test_k_for_a_given_ratio_by_hand():
    # s_cc / s_mlo = 0.6 / 0.3 = 2: CC dominates. k_cc = 1 - tanh(0.3 * 2) = 1 - tanh(0.6);
    # tanh(0.6) = (e^1.2 - 1) / (e^1.2 + 1) = 2.3201169 / 4.3201169 = 0.5370496, so k_cc = 0.4629504; k_mlo = 1.
    c = ogm_coefficients(0.6, 0.3, alpha=0.3)
    assert float(c["rho_cc"]) == pytest.approx(2.0) and float(c["rho_mlo"]) == pytest.approx(0.5)
    assert float(c["k_cc"]) == pytest.approx(0.4629504, abs=1e-6)
    assert float(c["k_mlo"]) == 1.0
    # Mirror image: MLO dominates with rho_mlo = 0.4 / 0.1 = 4 -> k_mlo = 1 - tanh(1.2), where
    # tanh(1.2) = (e^2.4 - 1) / (e^2.4 + 1) = 10.0231764 / 12.0231764 = 0.8336546, k_mlo = 0.1663454.
    c = ogm_coefficients(0.1, 0.4, alpha=0.3)
    assert float(c["k_cc"]) == 1.0 and float(c["k_mlo"]) == pytest.approx(0.1663454, abs=1e-6)
    # Equal scores: rho = 1 is not > 1, nobody is slowed.
    c = ogm_coefficients(0.5, 0.5, alpha=0.3)
    assert float(c["k_cc"]) == 1.0 and float(c["k_mlo"]) == 1.0


def _batch_and_out():
    """Four breasts. benign = (0, 1, 0, 0), malignant = (1, 0, 0, 0). CC logits (benign, malignant):
    i0 (0, ln3), i1 (ln3, -ln3), i2 (-ln3, -ln3), i3 (ln3, 0). MLO logits all 0 (p = 1/2 everywhere)."""
    batch = {"benign": torch.tensor([0, 1, 0, 0]), "malignant": torch.tensor([1, 0, 0, 0])}
    z_cc = torch.tensor([[0.0, L3], [L3, -L3], [-L3, -L3], [L3, 0.0]])
    z_mlo = torch.zeros(4, 2)
    return batch, {"logits": z_cc + z_mlo, "logits_cc": z_cc, "logits_mlo": z_mlo}


def test_class_balanced_score_of_a_fixed_batch_by_hand():
    # True-class probabilities of CC: benign i0 .5 (y=0), i1 .75 (y=1), i2 .75 (y=0), i3 .25 (y=0);
    # malignant i0 .75 (y=1), i1 .75, i2 .75, i3 .5 (all y=0).
    # benign:    positives {i1} .75; negatives (.5 + .75 + .25) / 3 = .5;   balanced (.75 + .5) / 2 = .625
    # malignant: positives {i0} .75; negatives (.75 + .75 + .5) / 3 = 2/3; balanced (.75 + 2/3) / 2 = 17/24
    # s_cc = (.625 + 17/24) / 2 = 2/3 (the plain mean would be 5/8); s_mlo = 1/2.
    batch, out = _batch_and_out()
    s, valid = ogm_scores(out, batch, None)
    assert s.tolist() == pytest.approx([2 / 3, 0.5], abs=1e-6) and valid.tolist() == [True, True]
    # rho_cc = 4/3, k_cc = 1 - tanh(0.4) = 1 - (e^0.8 - 1)/(e^0.8 + 1) = 1 - 1.2255409/3.2255409 = 0.6200510
    c = ogm_coefficients(s[0], s[1], alpha=0.3)
    assert float(c["k_cc"]) == pytest.approx(0.6200510, abs=1e-6)
    # CC dropped for i3 (view mask 0): CC benign negatives (.5 + .75) / 2 = .625 -> (.75 + .625) / 2 = .6875;
    # malignant negatives (.75 + .75) / 2 = .75 -> .75; s_cc = (.6875 + .75) / 2 = .71875. MLO keeps i3: 1/2.
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    s, _ = ogm_scores(out, batch, mask)
    assert s.tolist() == pytest.approx([0.71875, 0.5], abs=1e-6)
    # A CC-less batch has no CC score: not valid.
    s, valid = ogm_scores(out, batch, torch.tensor([[0.0, 1.0]] * 4))
    assert valid.tolist() == [False, True]


def _ctx(family, ge, epoch=0, step=0, **over):
    cfg = resolve("default", [f"model.family={family}", "model.width=4", "model.fc_dim=8", "reg.method=ogm_ge",
                              f"methods.ogm_ge.ge={str(ge).lower()}"] + [f"{k}={v}" for k, v in over.items()])
    torch.manual_seed(0)
    model = build_model(cfg.model, in_channels=3)
    g = torch.Generator().manual_seed(1)
    grads = {}
    for name, p in model.named_parameters():
        p.grad = torch.randn(p.shape, generator=g)
        grads[name] = p.grad.clone()
    batch, out = _batch_and_out()
    return SimpleNamespace(cfg=cfg, model=model, out=out, batch=batch, view_mask=None, epoch=epoch, step=step), grads


K_CC = 0.6200510  # the fixed batch's k_cc at alpha 0.3 (test above); k_mlo = 1


@pytest.mark.parametrize("family", ["joint", "split"])
def test_without_ge_only_the_dominant_views_parameters_are_scaled_by_k(family):
    ctx, g0 = _ctx(family, ge=False)
    logged = OGMGEModulation(ctx.cfg).after_backward(ctx)
    assert float(logged["ogm_ge_k_cc"]) == pytest.approx(K_CC, abs=1e-6) and float(logged["ogm_ge_k_mlo"]) == 1
    assert float(logged["ogm_ge_rho_cc"]) == pytest.approx(4 / 3, abs=1e-6)
    for name, p in ctx.model.named_parameters():
        want = g0[name] * K_CC if name.startswith("cc.") else g0[name]
        torch.testing.assert_close(p.grad, want, rtol=1e-5, atol=1e-6, msg=name)


def test_ge_noise_on_both_views_conv_weights_with_the_gradients_std_and_reproducible():
    ctx, g0 = _ctx("joint", ge=True, step=5)
    OGMGEModulation(ctx.cfg).after_backward(ctx)
    first = {n: p.grad.clone() for n, p in ctx.model.named_parameters()}
    biggest = max((n for n in g0 if g0[n].dim() == 4 and n.startswith("mlo.")), key=lambda n: g0[n].numel())
    for name, p in ctx.model.named_parameters():
        k = K_CC if name.startswith("cc.") else 1.0
        scaled = g0[name] * k if name.split(".")[0] in ("cc", "mlo") else g0[name]
        if g0[name].dim() == 4:  # conv weights of both views: k g + N(0, std(g)^2)
            assert not torch.allclose(p.grad, scaled), name
        else:  # BatchNorm, FC, the shared head: scaled only (the head not even that)
            torch.testing.assert_close(p.grad, scaled, rtol=1e-5, atol=1e-6, msg=name)
    noise = first[biggest] - g0[biggest]  # MLO: k = 1, so the difference is the noise; std(g0) = 1 here
    assert g0[biggest].numel() >= 500
    assert float(noise.std()) == pytest.approx(float(g0[biggest].std()), rel=0.15)
    # The same (seed, epoch, step) draws the same noise (resume, ranks); another step another one.
    again, _ = _ctx("joint", ge=True, step=5)
    OGMGEModulation(again.cfg).after_backward(again)
    other, _ = _ctx("joint", ge=True, step=6)
    OGMGEModulation(other.cfg).after_backward(other)
    grad = dict(again.model.named_parameters())[biggest].grad
    torch.testing.assert_close(grad, first[biggest], rtol=0, atol=0)
    assert not torch.equal(dict(other.model.named_parameters())[biggest].grad, first[biggest])


def test_shared_family_scales_only_the_per_view_fc_and_puts_ge_noise_on_the_shared_column():
    ctx, g0 = _ctx("shared", ge=True)
    OGMGEModulation(ctx.cfg).after_backward(ctx)
    for name, p in ctx.model.named_parameters():
        if name.startswith("cc."):  # cc.fc only under Shared
            torch.testing.assert_close(p.grad, g0[name] * K_CC, rtol=1e-5, atol=1e-6, msg=name)
        elif name.startswith("shared.column.") and g0[name].dim() == 4:
            assert not torch.allclose(p.grad, g0[name]), name  # noise, no k
        else:
            torch.testing.assert_close(p.grad, g0[name], rtol=0, atol=0, msg=name)


def test_nothing_changes_outside_the_epoch_window():
    ctx, g0 = _ctx("joint", ge=True, epoch=3, **{"methods.ogm_ge.start_epoch": 1, "methods.ogm_ge.end_epoch": 3})
    logged = OGMGEModulation(ctx.cfg).after_backward(ctx)
    assert float(logged["ogm_ge_k_cc"]) == 1.0  # as applied
    assert float(logged["ogm_ge_rho_cc"]) == pytest.approx(4 / 3, abs=1e-6)  # still measured
    for name, p in ctx.model.named_parameters():
        assert torch.equal(p.grad, g0[name]), name


def test_config_problems():
    ok = resolve("default", ["reg.method=ogm_ge"])
    assert method_problems(ok) == []
    for over, word in [("model.family=uni_cc", "balances two views"), ("methods.ogm_ge.alpha=0", "alpha"),
                       ("methods.ogm_ge.end_epoch=-1", "end_epoch")]:
        probs = method_problems(resolve("default", ["reg.method=ogm_ge", over]))
        assert len(probs) == 1 and word in probs[0], (over, probs)


def test_training_run_logs_finite_ogm_quantities(tiny_cohort, tmp_path):
    cfg = resolve("default", tiny_overrides(tiny_cohort, tmp_path / "ogm", **{
        "optim.epochs": 1, "run.max_steps": 3, "run.grad_norms": "false", "reg.method": "ogm_ge",
        "methods.ogm_ge.alpha": 0.5}))
    train(cfg)
    lines = [json.loads(x) for x in (tmp_path / "ogm" / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if x["kind"] == "step"]
    assert len(steps) == 3
    for x in steps:
        for key in ("score_cc", "score_mlo", "rho_cc", "rho_mlo", "k_cc", "k_mlo"):
            assert math.isfinite(x[f"ogm_ge_{key}"]), (key, x)
        assert x["ogm_ge_rho_cc"] * x["ogm_ge_rho_mlo"] == pytest.approx(1.0, rel=1e-5)
        assert min(x["ogm_ge_k_cc"], x["ogm_ge_k_mlo"]) <= 1.0 and max(x["ogm_ge_k_cc"], x["ogm_ge_k_mlo"]) == 1.0
    assert (tmp_path / "ogm" / "DONE").exists()
