"""AGM (training/methods/agm.py): mono responses equal the zero-padded forwards, kappa's direction and values
by hand, the class-balanced BCE score, the running means, gradient scaling and clipping, the resume state,
config problems, and a tiny training run."""
import json
import math
from types import SimpleNamespace

import pytest
import torch

from mvmammo.config import ModelConfig, resolve
from mvmammo.models import build_model
from mvmammo.training.loop import train
from mvmammo.training.methods import METHODS, method_problems
from mvmammo.training.methods.agm import (AGM_GRAD_CLIP, AGMModulation, agm_coefficients, agm_scores,
                                          mono_responses, padded_logits)
from mvmammo.training import checkpoint as ckpt

from conftest import tiny_overrides
from resume_check import assert_exact_resume

L3 = math.log(3.0)  # sigmoid(ln 3) = 3/4


def test_registered():
    assert "agm" in METHODS


@pytest.mark.parametrize("family", ["joint", "shared", "split"])
def test_mono_responses_equal_the_shapley_combination_of_zero_padded_forwards(family):
    torch.manual_seed(0)
    model = build_model(ModelConfig(family=family, width=4, fc_dim=8), in_channels=3).eval()
    with torch.no_grad():
        head = model.cc["head"] if family == "split" else model.shared["head"]
        head.bias.fill_(0.3)  # a non-zero bias, so the b/2 split matters
        cc, mlo = torch.randn(3, 3, 64, 48), torch.randn(3, 3, 64, 48)
        out = model(cc, mlo)
        ones = torch.ones(3, 1)
        no_cc = model(cc, mlo, view_mask=torch.cat([0 * ones, ones], 1))["logits"]   # f(0, mlo)
        no_mlo = model(cc, mlo, view_mask=torch.cat([ones, 0 * ones], 1))["logits"]  # f(cc, 0)
        want_cc = 0.5 * (out["logits"] - no_cc + no_mlo)
        want_mlo = 0.5 * (out["logits"] - no_mlo + no_cc)
        o_cc, o_mlo = mono_responses(model, out)
        both, pad_cc, pad_mlo = padded_logits(model, out)  # the head-only route, for every family
    torch.testing.assert_close(o_cc, want_cc, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(o_mlo, want_mlo, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pad_cc, no_cc, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pad_mlo, no_mlo, rtol=1e-5, atol=1e-5)
    if family != "split":  # sum fusion: o_v = W h_v + b/2 is the per-view logit itself (module doc)
        torch.testing.assert_close(o_cc, out["logits_cc"], rtol=0, atol=0)


def test_kappa_direction_and_values_by_hand():
    # CC has the lower loss (dominant): s = (0.3, 0.7), mean 0.5; running means sbar = (0.4, 0.6), mean 0.5.
    # r_cc = exp(2 (0.5 - 0.3)) = exp(0.4) = 1.4918247,   r_mlo = exp(-0.4) = 0.6703200
    # r*_cc = exp(2 (0.5 - 0.4)) = exp(0.2) = 1.2214028,  r*_mlo = exp(-0.2) = 0.8187308
    # CC is further ahead than usual (s_mlo - s_cc = 0.4 > 0.2), so it must be slowed:
    # kappa_cc = exp(0.1 (1.2214028 - 1.4918247)) = exp(-0.0270422) = 0.9733202 < 1
    # kappa_mlo = exp(0.1 (0.8187308 - 0.6703200)) = exp(0.0148411) = 1.0149517 > 1
    c = agm_coefficients(torch.tensor([0.3, 0.7]), torch.tensor([0.4, 0.6]), alpha=0.1)
    assert c["r"].tolist() == pytest.approx([1.4918247, 0.6703200], abs=1e-6)
    assert c["r_star"].tolist() == pytest.approx([1.2214028, 0.8187308], abs=1e-6)
    assert c["kappa"].tolist() == pytest.approx([0.9733202, 1.0149517], abs=1e-6)
    assert c["kappa"][0] < 1 < c["kappa"][1]
    # BalanceBenchmark's inverted ratio exp(+(s_m - mean)) would give the dominant view kappa > 1; ours does not.
    inverted_r = torch.exp(torch.tensor([0.3, 0.7]) - 0.5)
    inverted_r_star = torch.exp(torch.tensor([0.4, 0.6]) - 0.5)
    assert float(torch.exp(0.1 * (inverted_r_star - inverted_r))[0]) > 1
    # CC still dominant but LESS ahead than its running mean (gap 0.1 < 0.2): it is sped up, MLO slowed.
    c = agm_coefficients(torch.tensor([0.45, 0.55]), torch.tensor([0.4, 0.6]), alpha=0.1)
    assert c["kappa"][0] > 1 > c["kappa"][1]
    # On par with its running mean: no modulation.
    c = agm_coefficients(torch.tensor([0.2, 0.6]), torch.tensor([0.3, 0.7]), alpha=0.1)
    assert c["kappa"].tolist() == pytest.approx([1.0, 1.0], abs=1e-7)


def _batch_and_out():
    """As test_method_ogm_ge: benign (0, 1, 0, 0), malignant (1, 0, 0, 0); CC logits i0 (0, ln3),
    i1 (ln3, -ln3), i2 (-ln3, -ln3), i3 (ln3, 0); MLO logits 0. Sum fusion: o_v = logits_v."""
    batch = {"benign": torch.tensor([0, 1, 0, 0]), "malignant": torch.tensor([1, 0, 0, 0])}
    z_cc = torch.tensor([[0.0, L3], [L3, -L3], [-L3, -L3], [L3, 0.0]])
    z_mlo = torch.zeros(4, 2)
    return batch, {"logits": z_cc + z_mlo, "logits_cc": z_cc, "logits_mlo": z_mlo}


# BCE = -ln(true-class probability). CC benign: positive {i1} -ln .75 = 0.2876821; negatives -ln .5, -ln .75,
# -ln .25 = 0.6931472, 0.2876821, 1.3862944, mean 0.7890412; balanced (0.2876821 + 0.7890412) / 2 = 0.5383617.
# CC malignant: positive {i0} 0.2876821; negatives (2 x 0.2876821 + 0.6931472) / 3 = 0.4228371; balanced
# 0.3552596. s_cc = (0.5383617 + 0.3552596) / 2 = 0.4468106. MLO: ln 2 = 0.6931472 everywhere.
S_CC, S_MLO = 0.4468106, 0.6931472
# First step (sbar = 0 so r* = 1): r_cc = exp(2 (mean - s_cc)) = exp(s_mlo - s_cc) = exp(0.2463366) = 1.2793301,
# r_mlo = 1 / 1.2793301 = 0.7816591; kappa_cc = exp(0.1 (1 - 1.2793301)) = 0.9724535 (CC ahead: slowed),
# kappa_mlo = exp(0.1 (1 - 0.7816591)) = 1.0220742.
KAPPA_1 = (0.9724535, 1.0220742)


def _ctx(family="joint", epoch=0, step=0, run_dir=None, **over):
    cfg = resolve("default", [f"model.family={family}", "model.width=4", "model.fc_dim=8", "reg.method=agm"]
                  + [f"{k}={v}" for k, v in over.items()])
    torch.manual_seed(0)
    model = build_model(cfg.model, in_channels=3)
    batch, out = _batch_and_out()
    return SimpleNamespace(cfg=cfg, model=model, out=out, batch=batch, view_mask=None, epoch=epoch, step=step,
                           run_dir=run_dir)


def _set_grads(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    grads = {}
    for name, p in model.named_parameters():
        p.grad = torch.randn(p.shape, generator=g)
        grads[name] = p.grad.clone()
    return grads


def test_class_balanced_bce_score_by_hand():
    ctx = _ctx()
    s, valid = agm_scores(ctx.model, ctx.out, ctx.batch, None)
    assert s.tolist() == pytest.approx([S_CC, S_MLO], abs=1e-6) and valid.all()


def test_first_steps_kappa_running_means_and_scaled_gradients_without_clip():
    ctx = _ctx(**{"optim.grad_clip": 100.0})  # a (non-binding) clip of the user's: AGM does not clip
    hook = AGMModulation(ctx.cfg)
    g0 = _set_grads(ctx.model)
    logged = hook.after_backward(ctx)
    assert [float(logged["agm_kappa_cc"]), float(logged["agm_kappa_mlo"])] == pytest.approx(KAPPA_1, abs=1e-6)
    assert float(logged["agm_ratio_star_cc"]) == 1.0
    for name, p in ctx.model.named_parameters():
        k = {"cc": KAPPA_1[0], "mlo": KAPPA_1[1]}.get(name.split(".")[0], 1.0)  # shared.head: 1
        torch.testing.assert_close(p.grad, g0[name] * k, rtol=1e-5, atol=1e-6, msg=name)
    assert hook.mean.tolist() == pytest.approx([S_CC, S_MLO], abs=1e-6)  # the cumulative mean of one step
    # Second step, same batch: the scores equal their running means, so r = r* and kappa = 1.
    logged = hook.after_backward(ctx)
    assert [float(logged["agm_kappa_cc"]), float(logged["agm_kappa_mlo"])] == pytest.approx([1, 1], abs=1e-6)
    # Third step, MLO logits all ln 3 (p = .75): true-class probability .75 for positives, .25 for negatives,
    # BCE 0.2876821 and 1.3862944, balanced (0.2876821 + 1.3862944) / 2 = 0.8369882 for both labels.
    ctx.out = dict(ctx.out, logits_mlo=torch.full((4, 2), L3))
    logged = hook.after_backward(ctx)
    assert float(logged["agm_score_mlo"]) == pytest.approx(0.8369882, abs=1e-6)
    # sbar after three steps: ((3 x 0.4468106) / 3, (2 x 0.6931472 + 0.8369882) / 3) = (0.4468106, 0.7410942)
    assert hook.mean.tolist() == pytest.approx([S_CC, 0.7410942], abs=1e-6)
    assert hook.count.tolist() == [3.0, 3.0]


def test_default_clip_at_one_after_scaling():
    ctx = _ctx()  # optim.grad_clip = 0: AGM clips the total norm at 1 itself
    g0 = _set_grads(ctx.model)
    AGMModulation(ctx.cfg).after_backward(ctx)
    k = {n: {"cc": KAPPA_1[0], "mlo": KAPPA_1[1]}.get(n.split(".")[0], 1.0) for n in g0}
    total = math.sqrt(sum(float((g0[n] * k[n]).pow(2).sum()) for n in g0))  # >> 1 for N(0, 1) gradients
    assert total > 10
    for name, p in ctx.model.named_parameters():
        torch.testing.assert_close(p.grad, g0[name] * k[name] * AGM_GRAD_CLIP / (total + 1e-6), rtol=1e-4,
                                   atol=1e-8, msg=name)


def test_shared_family_scales_only_the_per_view_fc_and_the_window_turns_it_off():
    ctx = _ctx("shared", **{"optim.grad_clip": 1e9})
    g0 = _set_grads(ctx.model)
    AGMModulation(ctx.cfg).after_backward(ctx)
    for name, p in ctx.model.named_parameters():
        k = {"cc": KAPPA_1[0], "mlo": KAPPA_1[1]}.get(name.split(".")[0], 1.0)  # shared.column, shared.head: 1
        torch.testing.assert_close(p.grad, g0[name] * k, rtol=1e-5, atol=1e-6, msg=name)
    ctx = _ctx(epoch=2, **{"optim.grad_clip": 1e9, "methods.agm.end_epoch": 2})
    g0 = _set_grads(ctx.model)
    hook = AGMModulation(ctx.cfg)
    logged = hook.after_backward(ctx)
    assert float(logged["agm_kappa_cc"]) == 1.0 and hook.count.tolist() == [1.0, 1.0]  # means still updated
    assert all(torch.equal(p.grad, g0[n]) for n, p in ctx.model.named_parameters())


def test_running_means_survive_a_resume_through_the_state_dict(tmp_path, capsys):
    ctx = _ctx(run_dir=tmp_path)
    method = METHODS["agm"](ctx.cfg)
    hook = method.hooks()[0]
    hook.on_train_start(ctx)
    _set_grads(ctx.model)
    hook.after_backward(ctx)
    line = hook.on_epoch_end(ctx)  # epoch 0 ends
    assert [line["agm_mean_cc"], line["agm_mean_mlo"]] == pytest.approx([S_CC, S_MLO], abs=1e-6)
    saved = method.state_dict()  # what the loop puts into last.pt
    assert saved["mean"].tolist() == pytest.approx([S_CC, S_MLO], abs=1e-6) and saved["count"].tolist() == [1, 1]
    resumed = METHODS["agm"](ctx.cfg)
    resumed.load_state_dict(saved)  # the loop calls this before on_train_start
    resumed.hooks()[0].on_train_start(SimpleNamespace(**{**vars(ctx), "epoch": 1}))  # resume after epoch 0
    assert resumed.hooks()[0].mean.tolist() == hook.mean.tolist() and resumed.state_dict()["count"].tolist() == [1, 1]
    fresh = METHODS["agm"](ctx.cfg)
    fresh.load_state_dict({})  # a last.pt without AGM's state: documented reset
    fresh.hooks()[0].on_train_start(SimpleNamespace(**{**vars(ctx), "epoch": 2}))
    assert fresh.hooks()[0].mean.tolist() == [0.0, 0.0] and "restart from 0" in capsys.readouterr().out


def test_config_problems():
    assert method_problems(resolve("default", ["reg.method=agm", "model.family=split"])) == []
    for over, word in [("model.family=uni_mlo", "balances two views"), ("methods.agm.alpha=-1", "alpha"),
                       ("methods.agm.start_epoch=5", "start_epoch")]:
        extra = ["methods.agm.end_epoch=3"] if "start" in over else []
        probs = method_problems(resolve("default", ["reg.method=agm", over] + extra))
        assert len(probs) == 1 and word in probs[0], (over, probs)


def test_training_run_logs_finite_agm_quantities_and_its_state(tiny_cohort, tmp_path):
    cfg = resolve("default", tiny_overrides(tiny_cohort, tmp_path / "agm", **{
        "optim.epochs": 1, "run.max_steps": 3, "run.grad_norms": "false", "reg.method": "agm"}))
    train(cfg)
    lines = [json.loads(x) for x in (tmp_path / "agm" / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if x["kind"] == "step"]
    assert len(steps) == 3
    for x in steps:
        for key in ("score", "ratio", "ratio_star", "kappa"):
            for v in ("cc", "mlo"):
                assert math.isfinite(x[f"agm_{key}_{v}"]) and x[f"agm_{key}_{v}"] > 0, (key, v, x)
        assert x["agm_ratio_cc"] * x["agm_ratio_mlo"] == pytest.approx(1.0, rel=1e-5)
    assert steps[0]["agm_ratio_star_cc"] == 1.0  # no history at the first step
    epoch = [x for x in lines if x["kind"] == "epoch"][0]
    mean_cc = sum(x["agm_score_cc"] for x in steps) / 3  # the cumulative mean of the three steps' scores
    assert epoch["agm_mean_cc"] == pytest.approx(mean_cc, rel=1e-5)
    state = ckpt.load(tmp_path / "agm" / "last.pt")["methods"]["agm"]
    assert state["mean"][0] == pytest.approx(mean_cc, rel=1e-5) and state["count"].tolist() == [3, 3]


def test_resumed_run_matches_the_uninterrupted_one(tiny_cohort, tmp_path):
    """2 epochs straight vs 1 epoch + resume to 2: identical weights (the running means come back from last.pt;
    with them reset, epoch 1's kappas and so the weights differ)."""
    over = {"reg.method": "agm", "model.input_noise_std": 0.0, "run.prefetch": 0, "optim.batch_size": 8,
            "run.grad_norms": "false"}
    assert_exact_resume(tiny_cohort, tmp_path, over, "agm")
