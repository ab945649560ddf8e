"""MLA (training/methods/mla.py): alternation, the head-gradient projection computed by hand, the order in
which P absorbs the features, the refused families, and one tiny training run."""
import json
import math
from types import SimpleNamespace

import pytest
import torch

from mvmammo.config import resolve
from mvmammo.models import build_model
from mvmammo.training.loop import train
from mvmammo.training.methods import METHODS, method_problems
from mvmammo.training.methods.mla import alpha_at, owm_update, project, view_of_step
from mvmammo.training.tasks import bce_pair

from conftest import tiny_overrides

# The 2x3 example, by hand. P0 = I (3x3), r = (1, 1, 0), alpha = 0.1:
#   k = P0 r = (1, 1, 0), r^T k = 2, so P0 - k k^T / 2.1 has diagonal (1 - 1/2.1, 1 - 1/2.1, 1) = (11/21, 11/21, 1)
#   and off-diagonal (1,2), (2,1) entries -1/2.1 = -10/21;
#   ||.||_F^2 = 2 (11/21)^2 + 2 (10/21)^2 + 1 = (242 + 200 + 441) / 441 = 883 / 441,
#   so P = [[11, -10, 0], [-10, 11, 0], [0, 0, 21]] / sqrt(883).
# G = [[1, 2, 3], [0, 1, -1]]; G P^T (P is symmetric):
#   row 1: (1*11 + 2*(-10), 1*(-10) + 2*11, 3*21) / sqrt(883) = (-9, 12, 63) / sqrt(883)
#   row 2: (0*11 + 1*(-10), 0*(-10) + 1*11, -1*21) / sqrt(883) = (-10, 11, -21) / sqrt(883)
R = torch.tensor([1.0, 1.0, 0.0])
G = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, -1.0]])
P_HAND = torch.tensor([[11.0, -10.0, 0.0], [-10.0, 11.0, 0.0], [0.0, 0.0, 21.0]]) / math.sqrt(883)
G_HAND = torch.tensor([[-9.0, 12.0, 63.0], [-10.0, 11.0, -21.0]]) / math.sqrt(883)


def test_projection_matrix_and_projected_gradient_on_a_2x3_example():
    P = owm_update(torch.eye(3), R, 0.1)
    assert torch.allclose(P, P_HAND, atol=1e-6)
    assert torch.allclose(project(G, P), G_HAND, atol=1e-6)
    # Along r the update shrinks 21 times more than along e3 (orthogonal to r): 21 = (alpha + r^T r) / alpha.
    # G r = (3, 1) -> (G P^T) r = (3, 1) / sqrt(883);  G e3 = (3, -1) -> (G P^T) e3 = 21 (3, -1) / sqrt(883).
    assert torch.allclose(project(G, P) @ R, torch.tensor([3.0, 1.0]) / math.sqrt(883), atol=1e-6)
    assert torch.allclose(project(G, P)[:, 2], 21 * torch.tensor([3.0, -1.0]) / math.sqrt(883), atol=1e-6)


def test_alpha_schedule_and_alternation():
    assert alpha_at(0, 10) == pytest.approx(0.1)
    assert alpha_at(5, 10) == pytest.approx(0.1 ** 1.5)  # 0.0316...
    assert alpha_at(10, 10) == pytest.approx(0.01)
    assert [view_of_step(s) for s in range(5)] == [0, 1, 0, 1, 0]  # cc, mlo, cc, ...


def _mla_and_model(**extra):
    cfg = resolve("default", ["reg.method=mla", "model.width=4", "model.fc_dim=3", "run.progress=false",
                              *[f"{k}={v}" for k, v in extra.items()]])
    torch.manual_seed(0)
    return cfg, METHODS["mla"](cfg), build_model(cfg.model, in_channels=3)


def _fill_grads(model, value=1.0):
    for p in model.parameters():
        p.grad = torch.full_like(p, value)


def test_the_other_view_is_frozen_and_the_next_step_is_projected_away_from_this_steps_features():
    cfg, mla, model = _mla_and_model()
    ctx = SimpleNamespace(model=model, epoch=0, step=0, view_mask=None, out={})
    mla.on_train_start(ctx)
    mla._epoch, mla._epoch_start, mla._steps = 0, 0, 10  # the epoch's length, as steps_in_epoch would give
    W = model.shared["head"].weight
    assert W.shape == (2, 3)

    # Step 0 trains CC: its gradient meets P = I (unchanged); the batch mean of h_cc, r = (1, 1, 0), enters P after.
    _fill_grads(model)
    W.grad = G.clone()
    ctx.view_mask = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    ctx.out = {"h_cc": torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]), "h_mlo": torch.zeros(2, 3)}
    logged = mla.after_backward(ctx)
    assert logged["mla_view"] == 0 and logged["mla_alpha"] == pytest.approx(0.1)
    assert torch.equal(W.grad, G) and float(logged["mla_grad_scale"]) == pytest.approx(1.0)
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith("mlo."))
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("cc."))
    assert torch.allclose(mla.P, P_HAND, atol=1e-6)  # absorbed with step 0's alpha = 0.1

    # Step 1 trains MLO: its head gradient is projected with the P that holds CC's features.
    _fill_grads(model)
    W.grad = G.clone()
    ctx.step = 1
    ctx.view_mask = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    ctx.out = {"h_cc": torch.zeros(2, 3), "h_mlo": torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 3.0]])}
    logged = mla.after_backward(ctx)
    assert logged["mla_view"] == 1 and logged["mla_alpha"] == pytest.approx(0.1 ** 1.1)
    assert torch.allclose(W.grad, G_HAND, atol=1e-6)
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith("cc."))
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("mlo."))
    # Then r = (0, 0, 2) of the MLO step enters: k = P e3 * 2 = (0, 0, 42/sqrt(883)), r^T k = 84/sqrt(883);
    # entry (3,3) becomes 21/s - (42/s)^2 / (0.1^1.1 + 84/s) with s = sqrt(883), the rest unchanged, then /||.||_F.
    s, a = math.sqrt(883), 0.1 ** 1.1
    p33 = 21 / s - (42 / s) ** 2 / (a + 84 / s)
    raw = P_HAND.clone()
    raw[2, 2] = p33
    assert torch.allclose(mla.P, raw / torch.linalg.norm(raw), atol=1e-6)


def test_masked_forward_is_the_view_alone_through_the_shared_head_and_absent_views_are_weighted_out():
    cfg, mla, model = _mla_and_model()
    model.train()
    ctx = SimpleNamespace(step=1, view_mask=None)
    mask, weight = mla.view_mask(ctx, 3, torch.Generator(), torch.device("cpu"))
    assert weight is None and mask.tolist() == [[0.0, 1.0]] * 3  # odd step: MLO alone
    torch.manual_seed(1)
    cc, mlo = torch.randn(3, 3, 64, 48), torch.randn(3, 3, 64, 48)
    present = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])  # breast 1 has no MLO view
    ctx.view_mask = mask * present
    out = model(cc, mlo, view_mask=ctx.view_mask)
    head = model.shared["head"]
    assert torch.allclose(out["logits"], head(out["h_mlo"]), atol=1e-6)  # W h_mlo + b: the whole bias
    assert torch.count_nonzero(out["h_cc"]) == 0
    batch = {"benign": torch.tensor([0.0, 1.0, 0.0]), "malignant": torch.tensor([1.0, 0.0, 0.0])}
    got = mla.loss(out, batch, ctx)
    y = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    want = bce_pair(out["logits"][[0, 2]], y[[0, 2]])  # breast 1 weighted out
    assert float(got["loss"].detach()) == pytest.approx(float(want["loss"].detach()), rel=1e-6)
    assert float(got["mla_loss_mlo"]) == pytest.approx(float(want["loss"].detach()), rel=1e-6)


@pytest.mark.parametrize("family", ["split", "uni_cc", "uni_mlo"])
def test_families_without_a_shared_head_or_with_one_view_are_refused(family):
    cfg = resolve("default", ["reg.method=mla", f"model.family={family}", "model.fusion_gate=none"])
    found = method_problems(cfg)
    assert len(found) == 1 and "reg.method=mla" in found[0] and family in found[0]
    for ok in ("joint", "shared"):
        assert method_problems(resolve("default", ["reg.method=mla", f"model.family={ok}"])) == []


def test_mla_training_run_alternates_and_logs_finite_quantities(tiny_cohort, tmp_path):
    cfg = resolve("default", tiny_overrides(tiny_cohort, tmp_path / "mla", **{
        "optim.epochs": 1, "reg.method": "mla", "run.max_steps": 4, "run.grad_norms": "false"}))
    assert cfg.model.fusion_gate == "entropy"  # MLA's inference rule, chosen by reg.method
    train(cfg)
    lines = [json.loads(x) for x in (tmp_path / "mla" / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if x["kind"] == "step"]
    assert [x["mla_view"] for x in steps] == [0, 1, 0, 1]
    assert steps[0]["mla_grad_scale"] == pytest.approx(1.0)  # P = I at the first step
    for x in steps:
        assert math.isfinite(x["loss"]) and math.isfinite(x["mla_alpha"]) and 0 < x["mla_grad_scale"] <= 1.0 + 1e-6
        assert f"mla_loss_{('cc', 'mlo')[x['mla_view']]}" in x
    assert 0.01 <= min(x["mla_alpha"] for x in steps) <= max(x["mla_alpha"] for x in steps) == pytest.approx(0.1)
    epoch = [x for x in lines if x["kind"] == "epoch"][0]
    assert epoch["val_auc_malignant"] is None or 0 <= epoch["val_auc_malignant"] <= 1
