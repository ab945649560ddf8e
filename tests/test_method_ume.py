"""UME (training/methods/ume.py): Split trained with the sum of per-view losses; values checked by hand."""
import json
import math

import pytest
import torch

from conftest import tiny_overrides
from mvmammo.config import ModelConfig, resolve
from mvmammo.models import build_model
from mvmammo.models.heads import mean_probability_logit
from mvmammo.training.loop import train
from mvmammo.training.methods import method_problems
from mvmammo.training.methods.ume import ume_loss

LN2 = math.log(2.0)


def test_losses_by_hand():
    a = torch.tensor([[0.0, 0.0]])  # CC: p = (0.5, 0.5)
    b = torch.tensor([[math.log(3.0), -math.log(3.0)]])  # MLO: p = (0.75, 0.25)
    out = {"logits_cc": a, "logits_mlo": b, "logits": mean_probability_logit(a, b)}
    batch = {"benign": torch.tensor([0]), "malignant": torch.tensor([1])}
    losses = ume_loss(out, batch)
    # CC: -ln(1 - 0.5) - ln(0.5) = 2 ln 2; MLO: -ln(1 - 0.75) - ln(0.25) = 2 ln 4 = 4 ln 2
    assert float(losses["loss_cc"]) == pytest.approx(2 * LN2)
    assert float(losses["loss_mlo"]) == pytest.approx(4 * LN2)
    assert float(losses["loss"]) == pytest.approx(6 * LN2)
    # fused: mean probability (0.625, 0.375): -ln(0.375) - ln(0.375) = 2 ln(8/3)
    assert float(losses["loss_fused"]) == pytest.approx(2 * math.log(8 / 3))
    assert float(losses["loss_benign"]) == pytest.approx(math.log(8 / 3))
    assert float(losses["loss_malignant"]) == pytest.approx(math.log(8 / 3))


def test_masked_views_leave_their_breasts_out_of_that_views_loss():
    a = torch.tensor([[0.0, 0.0], [5.0, -5.0]])
    b = torch.tensor([[math.log(3.0), -math.log(3.0)], [0.0, 0.0]])
    out = {"logits_cc": a, "logits_mlo": b, "logits": mean_probability_logit(a, b)}
    batch = {"benign": torch.tensor([0, 1]), "malignant": torch.tensor([1, 0])}
    mask = torch.tensor([[1.0, 1.0], [0.0, 1.0]])  # breast 2 has no CC view
    losses = ume_loss(out, batch, mask)
    # CC: breast 1 only = 2 ln 2 (as above); MLO: mean of breast 1 (4 ln 2 over both labels) and breast 2
    # (logits 0: 2 ln 2) = per label means: benign (ln 4 + ln 2) / 2, malignant (ln 4 + ln 2) / 2 -> 3 ln 2
    assert float(losses["loss_cc"]) == pytest.approx(2 * LN2)
    assert float(losses["loss_mlo"]) == pytest.approx(3 * LN2)


def test_cc_head_gradient_does_not_depend_on_the_mlo_image():
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="split", width=4, fc_dim=16), in_channels=3).eval()
    cc = torch.randn(4, 3, 64, 48)
    batch = {"benign": torch.tensor([0, 1, 0, 0]), "malignant": torch.tensor([1, 0, 0, 1])}

    def grads(mlo, loss_fn):
        model.zero_grad(set_to_none=True)
        loss_fn(model(cc, mlo), batch)["loss"].backward()
        return [p.grad.clone() for n, p in model.named_parameters() if n.startswith("cc.")]

    mlo1, mlo2 = torch.randn(4, 3, 64, 48), 3 * torch.randn(4, 3, 64, 48)
    for g1, g2 in zip(grads(mlo1, ume_loss), grads(mlo2, ume_loss)):
        assert torch.equal(g1, g2)  # bit-identical: the CC column and head never see the MLO view
    # Control: with Split's usual loss on the averaged probability, the CC gradient does depend on the MLO image.
    from mvmammo.training.tasks import standard
    assert any(not torch.allclose(g1, g2) for g1, g2 in zip(grads(mlo1, standard), grads(mlo2, standard)))


def test_problems_require_split():
    assert method_problems(resolve("default", ["reg.method=ume", "model.family=split"])) == []
    for family in ("joint", "shared", "uni_cc"):
        probs = method_problems(resolve("default", ["reg.method=ume", f"model.family={family}"]))
        assert any("set model.family=split" in p for p in probs), family


def test_training_run_logs_per_view_and_fused_losses(tiny_cohort, tmp_path):
    run = tmp_path / "ume"
    train(resolve("default", tiny_overrides(tiny_cohort, run, **{
        "optim.epochs": 1, "run.max_steps": 3, "reg.method": "ume", "model.family": "split"})))
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if s["kind"] == "step"]
    assert len(steps) == 3
    for s in steps:
        assert all(math.isfinite(s[k]) for k in ("loss_cc", "loss_mlo", "loss_fused"))
        assert s["loss"] == pytest.approx(s["loss_cc"] + s["loss_mlo"], rel=1e-5)
    assert (run / "DONE").exists()
