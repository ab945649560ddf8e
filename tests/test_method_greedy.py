"""Balanced greedy learning (training/methods/greedy.py): d_speed from given gradients and parameters by hand,
which view is replaced, the window's bookkeeping, the forward-hook replacement, and one tiny training run."""
import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mvmammo.config import resolve
from mvmammo.models import build_model
from mvmammo.training.loop import train
from mvmammo.training.methods import METHODS, method_problems
from mvmammo.training.methods.greedy import d_speed, dominant_view, ema, speed_terms

from conftest import tiny_overrides


def _param(value, grad):
    p = nn.Parameter(torch.tensor(value))
    p.grad = torch.tensor(grad)
    return p


def test_speed_terms_and_d_speed_by_hand():
    named = [
        ("cc.column.w", _param([3.0, 4.0], [1.0, 2.0])),   # ||w||^2 = 25, ||g||^2 = 5
        ("cc.fc.w", _param([0.0, 5.0], [0.0, 5.0])),       # 25, 25
        ("mlo.fc.w", _param([1.0, 1.0, 1.0, 1.0], [0.1, 0.1, 0.1, 0.1])),  # 4, 0.04
        ("shared.head.w", _param([1.0], [100.0])),         # not a view's encoder: ignored
    ]
    s = speed_terms(named)
    assert s["cc"] == pytest.approx((5 + 25) / (25 + 25))  # 0.6: squared norms summed over the group first
    assert s["mlo"] == pytest.approx(0.04 / 4)             # 0.01
    d = d_speed(s["cc"], s["mlo"])
    assert d == pytest.approx(math.log10(60))              # 1.7782
    assert dominant_view(d, 0.01) == "cc"                  # CC learns faster: its features get replaced
    assert d_speed(1.0, 10.0) == pytest.approx(-1.0) and dominant_view(-1.0, 0.01) == "mlo"
    assert dominant_view(d_speed(1.0, 1.01), 0.01) is None  # |log10(1/1.01)| = 0.0043 < epsilon
    assert math.isnan(d_speed(0.0, 1.0)) and dominant_view(math.nan, 0.01) is None


def test_running_mean():
    assert ema(None, torch.tensor([3.0, 4.0]), 0.9).tolist() == [3.0, 4.0]  # first value: the batch mean
    # 0.9 * (1, 2) + 0.1 * (3, 4) = (1.2, 2.2)
    assert torch.allclose(ema(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]), 0.9), torch.tensor([1.2, 2.2]))


class _TwoFC(nn.Module):
    """The two things greedy reads of a model: parameters named cc.*/mlo.*, and view_fc(view)."""

    def __init__(self):
        super().__init__()
        self.cc = nn.ModuleDict({"fc": nn.Linear(1, 2, bias=False)})
        self.mlo = nn.ModuleDict({"fc": nn.Linear(1, 2, bias=False)})
        with torch.no_grad():
            self.cc["fc"].weight.copy_(torch.tensor([[3.0], [4.0]]))   # ||w||^2 = 25
            self.mlo["fc"].weight.copy_(torch.tensor([[1.0], [1.0]]))  # 2

    def view_fc(self, view):
        return getattr(self, view)["fc"]

    def set_grads(self):
        self.cc["fc"].weight.grad = torch.tensor([[1.0], [2.0]])    # ||g||^2 = 5   -> 5 / 25 = 0.2
        self.mlo["fc"].weight.grad = torch.tensor([[0.1], [0.1]])   # 0.02          -> 0.02 / 2 = 0.01


def test_trigger_window_and_speed_bookkeeping():
    cfg = resolve("default", ["reg.method=greedy", "methods.greedy.start_epoch=1", "methods.greedy.window=2"])
    g = METHODS["greedy"](cfg)
    model = _TwoFC()
    ctx = SimpleNamespace(model=model, epoch=0, view_mask=None,
                          out={"h_cc": torch.tensor([[1.0, 3.0]]), "h_mlo": torch.tensor([[2.0, 2.0]])})
    g.on_train_start(ctx)
    model.set_grads()
    x = g.after_backward(ctx)  # epoch 0 < start_epoch: d_speed measured, no window
    assert x["greedy_mu_cc"] == pytest.approx(0.2) and x["greedy_mu_mlo"] == pytest.approx(0.01)
    assert x["greedy_d_speed"] == pytest.approx(math.log10(20)) and x["greedy_trigger"] == 0
    ctx.epoch = 1
    model.set_grads()
    x = g.after_backward(ctx)  # mu = (0.4, 0.02), d = log10 20 = 1.30 > 0.01: replace CC for 2 steps
    assert x["greedy_trigger"] == 1 and x["greedy_window"] == 0 and g.replaced == "cc"
    real_cc = ctx.out["h_cc"]
    ctx.out["h_cc"] = torch.tensor([[9.0, 9.0]])  # what the stand-in would give: must not enter CC's mean
    for _ in range(2):  # the window: mu frozen, CC's grads dropped
        model.set_grads()
        x = g.after_backward(ctx)
        assert x["greedy_window"] == 1 and x["greedy_replaced"] == 0 and x["greedy_trigger"] == 0
        assert x["greedy_mu_cc"] == pytest.approx(0.4) and model.cc["fc"].weight.grad is None
        assert model.mlo["fc"].weight.grad is not None
    assert g._handle is None  # closed after `window` steps
    ctx.out["h_cc"] = real_cc
    model.set_grads()
    x = g.after_backward(ctx)  # measured again, and re-triggered
    assert x["greedy_mu_cc"] == pytest.approx(0.6) and x["greedy_mu_mlo"] == pytest.approx(0.03)
    assert x["greedy_trigger"] == 1
    # The running means: CC's stayed at its real batch means (never updated from the stand-in).
    assert torch.allclose(g.mean["cc"], torch.tensor([1.0, 3.0]))
    g.on_train_end(ctx)
    assert g._handle is None


def test_forward_hook_replaces_the_dominant_views_features_in_training_only():
    cfg = resolve("default", ["reg.method=greedy", "model.width=4", "model.fc_dim=8"])
    g = METHODS["greedy"](cfg)
    torch.manual_seed(0)
    model = build_model(cfg.model, in_channels=3)
    cc, mlo = torch.randn(4, 3, 64, 48), torch.randn(4, 3, 64, 48)
    m = torch.arange(8.0)
    g.mean = {"cc": m, "mlo": None}
    g._open(model, "cc")
    model.train()
    out = model(cc, mlo)
    assert torch.equal(out["h_cc"], m.expand(4, 8))  # every breast gets the running mean
    assert out["h_mlo"].std(0).sum() > 0  # the under-learned view keeps its own features
    out["logits"].sum().backward()
    cc_grads = [p.grad for n, p in model.named_parameters() if n.startswith("cc.")]
    assert all(gr is not None and torch.count_nonzero(gr) == 0 for gr in cc_grads)  # exactly 0 (DDP-safe)
    assert any(torch.count_nonzero(p.grad) > 0 for n, p in model.named_parameters() if n.startswith("mlo."))
    model.eval()
    with torch.no_grad():
        assert not torch.equal(model(cc, mlo)["h_cc"], m.expand(4, 8))  # validation sees the real features
    g._close()
    model.train()
    assert not torch.equal(model(cc, mlo)["h_cc"], m.expand(4, 8))  # hook removed


def test_uni_view_is_refused_and_bad_values_named():
    found = method_problems(resolve("default", ["reg.method=greedy", "model.family=uni_cc",
                                                "methods.greedy.window=0", "methods.greedy.momentum=1"]))
    assert any("uni_cc" in p for p in found) and any("window=0" in p for p in found)
    assert any("momentum=1" in p for p in found)
    assert any("run.compile" in p for p in method_problems(resolve("default", ["reg.method=greedy",
                                                                              "run.compile=true"])))
    for fam in ("joint", "shared", "split"):
        assert method_problems(resolve("default", ["reg.method=greedy", f"model.family={fam}"])) == []


def test_greedy_training_run_logs_speed_and_windows(tiny_cohort, tmp_path):
    cfg = resolve("default", tiny_overrides(tiny_cohort, tmp_path / "gr", **{
        "optim.epochs": 1, "reg.method": "greedy", "methods.greedy.start_epoch": 0,
        "methods.greedy.epsilon": 0.0, "methods.greedy.window": 2, "run.max_steps": 5, "run.grad_norms": "false"}))
    train(cfg)
    steps = [json.loads(x) for x in (tmp_path / "gr" / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["kind"] == "step"]
    assert len(steps) == 5
    # epsilon 0: the first measured step opens a window, the next 2 steps are re-balanced, then again.
    assert [x["greedy_trigger"] for x in steps] == [1, 0, 0, 1, 0]
    assert [x["greedy_window"] for x in steps] == [0, 1, 1, 0, 1]
    assert all(x["greedy_replaced"] in (0, 1) for x in steps if x["greedy_window"])
    for x in steps:
        assert math.isfinite(x["loss"]) and math.isfinite(x["greedy_d_speed"])
        assert x["greedy_mu_cc"] > 0 and x["greedy_mu_mlo"] > 0
