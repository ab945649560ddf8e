"""MMPareto (training/methods/mmpareto.py): min-norm weights and combined gradients computed by hand."""
import json
import math

import pytest
import torch
from torch import nn

from conftest import tiny_overrides
from mvmammo.config import ModelConfig, resolve
from mvmammo.models import build_model
from mvmammo.training.loop import train
from mvmammo.training.methods import method_problems
from mvmammo.training.methods.mmpareto import (MMPareto, combine, min_norm_weight, pareto_backward,
                                               pareto_weights)


def t(*xs):
    return torch.tensor(xs, dtype=torch.float64)


def test_min_norm_weights_and_gradient_of_two_conflicting_2d_gradients_by_hand():
    g_mm, g_u = t(1, 0), t(-1, 1)
    # cos = (1*-1 + 0*1) / (1 * sqrt 2) = -1/sqrt 2 < 0 -> MGDA.
    # a = (g_u - g_mm).g_u / |g_mm - g_u|^2 = (-2, 1).(-1, 1) / |(2, -1)|^2 = (2 + 1) / 5 = 0.6
    cos, a = pareto_weights(g_mm, g_u)
    assert float(cos) == pytest.approx(-1 / math.sqrt(2))
    assert float(a) == pytest.approx(0.6)
    # min-norm point d = 0.6 (1, 0) + 0.4 (-1, 1) = (0.2, 0.4): d.g_mm = d.g_u = |d|^2 = 0.2
    # g = 2 d = (0.4, 0.8), |g| = sqrt 0.8; |g_mm + g_u| = |(0, 1)| = 1 > sqrt 0.8 -> rescale to norm 1,
    # then x gamma 1.5: 1.5 (0.4, 0.8) / sqrt 0.8 = (0.670820, 1.341641)
    g = combine(g_mm, g_u, a, 1.5)
    assert g.tolist() == pytest.approx([0.6 / math.sqrt(0.8), 1.2 / math.sqrt(0.8)])
    assert g.tolist() == pytest.approx([0.670820, 1.341641], abs=1e-6)


def test_agreeing_gradients_get_equal_weights_and_gamma_times_the_sum():
    g_mm, g_u = t(1, 0), t(1, 1)  # cos = 1/sqrt 2 > 0
    cos, a = pareto_weights(g_mm, g_u)
    assert float(cos) == pytest.approx(1 / math.sqrt(2)) and float(a) == 0.5
    # g = 2 (0.5 (1, 0) + 0.5 (1, 1)) = (2, 1) = g_mm + g_u: no rescale; x 1.5 = (3, 1.5)
    assert combine(g_mm, g_u, a, 1.5).tolist() == pytest.approx([3.0, 1.5])


def test_min_norm_weight_matches_a_brute_force_search():
    gen = torch.Generator().manual_seed(0)
    grid = torch.linspace(0, 1, 100_001, dtype=torch.float64)
    for _ in range(5):
        g1, g2 = torch.randn(7, generator=gen, dtype=torch.float64), torch.randn(7, generator=gen, dtype=torch.float64)
        norms = ((grid[:, None] * g1 + (1 - grid[:, None]) * g2) ** 2).sum(1)
        assert float(min_norm_weight(g1, g2)) == pytest.approx(float(grid[norms.argmin()]), abs=2e-5)


def test_zero_gradients_are_no_conflict_and_never_nan():
    cos, a = pareto_weights(t(1, 2), t(0, 0))
    assert float(cos) == 0 and float(a) == 0.5
    g = combine(t(1, -1), t(-1, 1), torch.tensor(0.5, dtype=torch.float64), 1.5)  # 2 d = 0: stays 0
    assert g.tolist() == [0.0, 0.0]


class _Toy(nn.Module):
    """Parameters named like a model's groups; the losses are linear in them, so gradients are the coefficients."""

    def __init__(self):
        super().__init__()
        z = lambda n: nn.Parameter(torch.zeros(n, dtype=torch.float64))  # noqa: E731
        self.cc = nn.ParameterDict({"a": z(2), "b": z(1), "f": z(1)})
        self.mlo = nn.ParameterDict({"a": z(2)})
        self.shared = nn.ParameterDict({"w": z(1)})
        self.aux_cc = nn.ParameterDict({"w": z(1)})


def test_pareto_backward_per_encoder_weights_per_tensor_rescale_and_plain_heads():
    m = _Toy()
    c = m.cc
    # L_mm reaches cc.a, cc.b, cc.f (a fused-path FC), mlo.a, shared.w; L_u reaches cc.a, cc.b, mlo.a, aux_cc.w.
    loss_mm = t(1, 0).dot(c["a"]) + 2 * c["b"].sum() + 4 * c["f"].sum() + t(1, 0).dot(m.mlo["a"]) \
        + 3 * m.shared["w"].sum()
    loss_u = t(-1, 1).dot(c["a"]) - c["b"].sum() + t(1, 1).dot(m.mlo["a"]) + 5 * m.aux_cc["w"].sum()
    logged = pareto_backward(m, loss_mm, loss_u, gamma=1.5)
    # Encoder cc = (cc.a, cc.b): g_mm = (1, 0, 2), g_u = (-1, 1, -1); g_mm.g_u = -3 < 0
    #   cos = -3 / (sqrt 5 sqrt 3); a = (g_u - g_mm).g_u / |g_mm - g_u|^2 = (-2, 1, -3).(-1, 1, -1) / |(2, -1, 3)|^2
    #       = 6 / 14 = 3/7, a_u = 4/7
    assert float(logged["mmpareto_cos_cc"]) == pytest.approx(-3 / math.sqrt(15))
    assert float(logged["mmpareto_a_mm_cc"]) == pytest.approx(3 / 7)
    # cc.a: 2 (3/7 (1, 0) + 4/7 (-1, 1)) = (-2/7, 8/7), norm sqrt(68)/7 = 1.178 > |(0, 1)| = 1: no rescale; x 1.5
    assert c["a"].grad.tolist() == pytest.approx([-3 / 7, 12 / 7])
    # cc.b: 2 (3/7 * 2 + 4/7 * -1) = 4/7 < |2 - 1| = 1: rescaled to 1; x 1.5
    assert c["b"].grad.tolist() == pytest.approx([1.5])
    # Encoder mlo: g_mm = (1, 0), g_u = (1, 1) agree -> (0.5, 0.5): 1.5 (2, 1)
    assert float(logged["mmpareto_a_mm_mlo"]) == 0.5
    assert m.mlo["a"].grad.tolist() == pytest.approx([3.0, 1.5])
    # Tensors reached by one loss only keep the plain gradient (no gamma): the fused-path FC and both heads.
    assert c["f"].grad.tolist() == [4.0] and m.shared["w"].grad.tolist() == [3.0]
    assert m.aux_cc["w"].grad.tolist() == [5.0]
    assert set(logged) == {"mmpareto_cos_cc", "mmpareto_a_mm_cc", "mmpareto_cos_mlo", "mmpareto_a_mm_mlo"}


@pytest.mark.parametrize("family,encoders", [("joint", {"cc", "mlo"}), ("shared", {"shared"}),
                                             ("split", {"cc", "mlo"})])
def test_real_model_encoders_are_the_columns_and_match_the_formula(family, encoders):
    torch.manual_seed(0)
    model = build_model(ModelConfig(family=family, width=4, fc_dim=16, aux_heads=True), in_channels=3)
    cc, mlo = torch.randn(4, 3, 64, 48), torch.randn(4, 3, 64, 48)
    batch = {"benign": torch.tensor([0, 1, 0, 0]), "malignant": torch.tensor([1, 0, 0, 1])}
    cfg = resolve("default", [f"model.family={family}", "model.aux_heads=true", "reg.method=mmpareto"])
    method = MMPareto(cfg)
    model.eval()  # deterministic BatchNorm, so the reference forward below is the same function

    def run():
        model.zero_grad(set_to_none=True)
        return method.loss(model(cc, mlo), batch, None)

    losses = run()
    named = dict(model.named_parameters())
    params = list(named.values())
    ref_mm = torch.autograd.grad(losses["loss_fused"], params, retain_graph=True, allow_unused=True)
    ref_u = torch.autograd.grad(losses["loss_cc"] + losses["loss_mlo"], params, allow_unused=True)
    ref_mm, ref_u = dict(zip(named, ref_mm)), dict(zip(named, ref_u))
    losses = run()
    ctx = type("Ctx", (), {"model": model})()
    method.backward(losses, ctx)
    logged = method.hooks()[0].after_backward(ctx)
    assert {k.rsplit("_", 1)[1] for k in logged} == encoders
    for name, p in named.items():
        mm, u = ref_mm[name], ref_u[name]
        if mm is not None and u is not None:  # an encoder tensor: the column (or Shared's one column)
            assert ".column." in name
            a = logged[f"mmpareto_a_mm_{name.split('.')[0]}"]
            assert torch.allclose(p.grad, combine(mm, u, a, 1.5), rtol=1e-4, atol=1e-7)
        else:  # fused-path FC, heads, aux heads: the plain gradient
            plain = mm if mm is not None else u
            assert torch.allclose(p.grad, plain, rtol=1e-5, atol=1e-8), name
            assert ".column." not in name


def test_problems_refuse_uni_view_missing_aux_heads_and_bad_gamma():
    ok = resolve("default", ["reg.method=mmpareto", "model.aux_heads=true"])
    assert method_problems(ok) == []
    uni = resolve("default", ["reg.method=mmpareto", "model.aux_heads=true", "model.family=uni_cc"])
    assert any("model.family=uni_cc" in p for p in method_problems(uni))
    no_aux = resolve("default", ["reg.method=mmpareto"])
    assert any("model.aux_heads=true" in p for p in method_problems(no_aux))
    bad = resolve("default", ["reg.method=mmpareto", "model.aux_heads=true", "methods.mmpareto.gamma=0"])
    assert any("methods.mmpareto.gamma" in p for p in method_problems(bad))


def test_training_run_logs_cosines_and_weights(tiny_cohort, tmp_path):
    cfg = resolve("default", tiny_overrides(tiny_cohort, tmp_path / "mmp", **{
        "optim.epochs": 1, "run.max_steps": 3, "reg.method": "mmpareto", "model.aux_heads": "true"}))
    train(cfg)
    lines = [json.loads(x) for x in (tmp_path / "mmp" / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if x["kind"] == "step"]
    assert len(steps) == 3
    for s in steps:
        for k in ("mmpareto_cos_cc", "mmpareto_cos_mlo", "mmpareto_a_mm_cc", "mmpareto_a_mm_mlo",
                  "loss_fused", "loss_cc", "loss_mlo"):
            assert math.isfinite(s[k]), k
        assert -1 <= s["mmpareto_cos_cc"] <= 1 and 0 <= s["mmpareto_a_mm_cc"] <= 1
        assert s["loss"] == pytest.approx(s["loss_fused"] + s["loss_cc"] + s["loss_mlo"], rel=1e-5)
    assert (tmp_path / "mmp" / "DONE").exists()


@pytest.mark.slow
def test_two_processes_match_one_with_the_whole_batch(tiny_cohort, tmp_path):
    # autograd.grad bypasses DDP's hooks: the method averages both gradients over ranks itself, before the
    # (non-linear) combination, so 2 ranks x 4 breasts must train the same model as 1 process x 8.
    from test_distributed import _launch
    from mvmammo.training.checkpoint import load as ckpt_load

    extra = {"optim.epochs": 1, "optim.batch_size": 8, "model.input_noise_std": 0.0, "run.max_steps": 2,
             "run.device": "cpu", "reg.method": "mmpareto", "model.aux_heads": "true"}
    one, two = tmp_path / "one", tmp_path / "two"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(resolve("default", tiny_overrides(tiny_cohort, one, **extra)))
    finally:
        torch.set_num_threads(threads)
    _launch(tiny_overrides(tiny_cohort, two, **extra), 2)
    a, b = ckpt_load(one / "last.pt")["model"], ckpt_load(two / "last.pt")["model"]
    for k, v in a.items():
        if v.dtype.is_floating_point:
            assert torch.allclose(v, b[k], rtol=1e-3, atol=1e-5), (k, (v - b[k]).abs().max())
