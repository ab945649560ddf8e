"""ReconBoost (training/methods/reconboost.py): the phase schedule, the per-breast boosting weight and the
stage loss's gradient computed by hand, the refused families, and one tiny training run."""
import json
import math

import pytest
import torch

from mvmammo.config import resolve
from mvmammo.models import build_model
from mvmammo.training.loop import train
from mvmammo.training.methods import method_problems
from mvmammo.training.methods.reconboost import boost_weight, phase, stage_loss

from conftest import tiny_overrides

LN3 = math.log(3.0)  # sigmoid(ln 3) = 3/4


def test_phase_schedule_follows_each_stage_with_its_rectification():
    # stage_epochs 4, correct_epochs 4: cc 0-3, rectify 4-7, mlo 8-11, rectify 12-15, then cc again.
    want = ["cc"] * 4 + ["rectify"] * 4 + ["mlo"] * 4 + ["rectify"] * 4 + ["cc"]
    assert [phase(e, 4, 4) for e in range(17)] == want
    assert [phase(e, 2, 1) for e in range(7)] == ["cc", "cc", "rectify", "mlo", "mlo", "rectify", "cc"]
    assert [phase(e, 1, 0) for e in range(4)] == ["cc", "mlo", "cc", "mlo"]  # no rectification


def test_boost_weight_by_hand():
    # w1 = 5, w2 = 1. Other view's logits and labels per (breast, label):
    #   u = 0,     y = 1: p_o(y) = 1/2       -> 5 - 1/2 = 4.5
    #   u = ln 3,  y = 1: p_o(y) = 3/4       -> 4.25
    #   u = ln 3,  y = 0: p_o(y) = 1 - 3/4   -> 4.75
    #   u = -ln 3, y = 0: p_o(y) = 1 - 1/4   -> 4.25
    u = torch.tensor([[0.0, LN3], [LN3, -LN3]])
    y = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    assert torch.allclose(boost_weight(u, y, 5.0, 1.0), torch.tensor([[4.5, 4.25], [4.75, 4.25]]), atol=1e-6)


def test_stage_loss_value_and_gradients_by_hand():
    u_other = torch.tensor([[0.0, LN3], [LN3, -LN3]], requires_grad=True)
    y = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    u_m = torch.zeros(2, 2, requires_grad=True)  # p_m(y) = 1/2 everywhere: BCE = ln 2
    out = stage_loss(u_m, u_other, y, 5.0, 1.0)
    val = {k: float(v.detach()) for k, v in out.items()}
    # Per label, the mean over the 2 breasts of weight * ln 2: benign (4.5 + 4.75)/2 = 4.625, malignant 4.25.
    assert val["loss_benign"] == pytest.approx(4.625 * math.log(2), rel=1e-6)
    assert val["loss_malignant"] == pytest.approx(4.25 * math.log(2), rel=1e-6)
    assert val["loss"] == pytest.approx(8.875 * math.log(2), rel=1e-6)
    assert val["reconboost_weight"] == pytest.approx((4.5 + 4.25 + 4.75 + 4.25) / 4)
    out["loss"].backward()
    # d/du_m = weight * (sigmoid(u_m) - y) / B = weight * (1/2 - y) / 2.
    want = torch.tensor([[4.5 * -0.5 / 2, 4.25 * -0.5 / 2], [4.75 * 0.5 / 2, 4.25 * 0.5 / 2]])
    assert torch.allclose(u_m.grad, want, atol=1e-6)  # [[-1.125, -1.0625], [1.1875, 1.0625]]
    assert torch.count_nonzero(u_other.grad) == 0  # the other view is a detached target (zero, present for DDP)
    # A breast weighted out (sample_weight 0) leaves the mean over the others.
    one = stage_loss(u_m.detach(), u_other.detach(), y, 5.0, 1.0, torch.tensor([1.0, 0.0]))
    assert float(one["loss"]) == pytest.approx((4.5 + 4.25) * math.log(2), rel=1e-6)


def test_config_problems():
    bad = resolve("default", ["reg.method=reconboost", "methods.reconboost.w1=1", "methods.reconboost.w2=1",
                              "methods.reconboost.stage_epochs=0"])
    found = method_problems(bad)
    assert any("w1=1" in p for p in found) and any("stage_epochs=0" in p for p in found)
    assert any("uni_mlo" in p for p in method_problems(resolve("default", ["reg.method=reconboost",
                                                                          "model.family=uni_mlo"])))
    for fam in ("joint", "shared", "split"):
        assert method_problems(resolve("default", ["reg.method=reconboost", f"model.family={fam}"])) == []


class _Snapshot:
    """Caller hook: the model's parameters at the end of each epoch."""

    def __init__(self):
        self.params = []

    def on_epoch_end(self, ctx):
        self.params.append({n: p.detach().clone() for n, p in ctx.model.named_parameters()})
        return {}


def test_reconboost_run_trains_one_learner_per_stage_then_rectifies(tiny_cohort, tmp_path):
    cfg = resolve("default", tiny_overrides(tiny_cohort, tmp_path / "rb", **{
        "optim.epochs": 2, "reg.method": "reconboost", "methods.reconboost.stage_epochs": 1,
        "methods.reconboost.correct_epochs": 1, "run.grad_norms": "false"}))
    snap = _Snapshot()
    train(cfg, hooks=[snap])
    lines = [json.loads(x) for x in (tmp_path / "rb" / "metrics.jsonl").read_text().splitlines()]
    assert [x["reconboost_phase"] for x in lines if x["kind"] == "epoch"] == [0, 2]  # cc stage, rectification
    stage = [x for x in lines if x["kind"] == "step" and x["epoch"] == 0]
    rect = [x for x in lines if x["kind"] == "step" and x["epoch"] == 1]
    assert stage and rect
    for x in stage:  # weights w1 - w2 p_o(y) lie in [w1 - w2, w1] = [4, 5]
        assert x["reconboost_phase"] == 0 and 4.0 <= x["reconboost_weight"] <= 5.0 and math.isfinite(x["loss"])
    assert all(x["reconboost_phase"] == 2 and "reconboost_weight" not in x and math.isfinite(x["loss"])
               for x in rect)
    torch.manual_seed(cfg.run.seed)  # the loop's initialisation
    init = dict(build_model(cfg.model, in_channels=3).named_parameters())
    after_stage, after_rect = snap.params
    assert all(torch.equal(after_stage[n], init[n]) for n in init if n.startswith("mlo."))  # MLO sat out
    assert all(not torch.equal(after_stage[n], init[n]) for n in ("cc.fc.weight", "cc.fc.bias"))  # CC trained
    assert not torch.equal(after_stage["shared.head.weight"], init["shared.head.weight"])  # the head trains too
    assert any(not torch.equal(after_rect[n], after_stage[n]) for n in init if n.startswith("mlo."))
