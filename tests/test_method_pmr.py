"""PMR (training/methods/pmr.py): prototype logits, the weaker view's term, EMA, stratified rows, exact resume
and a tiny training run; the expected numbers are worked out by hand in the comments."""
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mvmammo.config import resolve
from mvmammo.training.loop import train
from mvmammo.training.methods import method_problems
from mvmammo.training import checkpoint as ckpt
from mvmammo.training.methods.pmr import PMR, ema, pmr_coefficients, prototype_logits, prototype_rows
from mvmammo.training.tasks import standard

from conftest import tiny_overrides
from resume_check import assert_exact_resume

LN3 = math.log(3.0)
LN2 = math.log(2.0)


def test_prototype_logits_by_hand():
    # Label benign: negative prototype (0, 0), positive (3, 4); label malignant: negative (1, 0), positive (0, 1).
    protos = torch.tensor([[[0.0, 0.0], [3.0, 4.0]], [[1.0, 0.0], [0.0, 1.0]]])
    h = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    g = prototype_logits(h, protos)
    # h = (0, 0): benign d_neg 0, d_pos 5 -> g = -5; malignant d_neg 1, d_pos 1 -> 0.
    # h = (3, 4): benign 5 - 0 = 5; malignant ||(2, 4)|| - ||(3, 3)|| = sqrt(20) - sqrt(18) = 0.2294963.
    assert g.flatten().tolist() == pytest.approx([-5.0, 0.0, 5.0, math.sqrt(20) - math.sqrt(18)], abs=1e-5)


def test_only_the_weaker_views_term_is_switched_on():
    assert [float(x) for x in pmr_coefficients(torch.tensor(1.5), 0.6)] == pytest.approx([0.0, 0.6])  # CC ahead
    assert [float(x) for x in pmr_coefficients(torch.tensor(0.5), 0.6)] == pytest.approx([0.6, 0.0])  # MLO ahead
    assert [float(x) for x in pmr_coefficients(torch.tensor(1.0), 0.6)] == [0.0, 0.0]  # a tie: neither


def _method(alpha=0.6):
    m = PMR(resolve("default", ["reg.method=pmr", f"methods.pmr.alpha={alpha}"]))
    # One feature; for both labels the negative prototype sits at 0 and the positive at ln 3.
    p = torch.tensor([[[0.0], [LN3]], [[0.0], [LN3]]])
    m.protos = {"cc": p, "mlo": p.clone()}
    m.defined = {"cc": torch.ones(2, 2, dtype=torch.bool), "mlo": torch.ones(2, 2, dtype=torch.bool)}
    return m


@pytest.mark.parametrize("strong", ["cc", "mlo"])
def test_loss_rho_and_switched_term_by_hand(strong):
    # Breast 0 positive for both labels, breast 1 negative for both. The strong view's features sit on the right
    # prototypes: g = (ln3 - 0) for breast 0 and (0 - ln3) for breast 1, true-class probability 3/4 everywhere,
    # score 3/4. The weak view sits halfway (ln3/2): g = 0, probability 1/2, score 1/2.
    # rho = s_cc / s_mlo = 3/2 (CC strong) or 2/3 (MLO strong); only the weak view's term is on, weight alpha:
    # its PCE = BCE(0, y) per label = ln 2, summed over the 2 labels = 2 ln 2.
    weak = "mlo" if strong == "cc" else "cc"
    h = {strong: torch.tensor([[LN3], [0.0]]), weak: torch.full((2, 1), LN3 / 2)}
    logits = torch.tensor([[0.3, -0.2], [0.1, 0.4]])
    out = {"logits": logits, "h_cc": h["cc"], "h_mlo": h["mlo"]}
    batch = {"benign": torch.tensor([1.0, 0.0]), "malignant": torch.tensor([1.0, 0.0])}
    m = _method(alpha=0.6)
    ctx = SimpleNamespace(task=standard, view_mask=None)
    losses = m.loss(out, batch, ctx)
    task = float(standard(out, batch)["loss"])
    assert float(m.log["pmr_rho"]) == pytest.approx(1.5 if strong == "cc" else 2 / 3, abs=1e-6)
    assert float(m.log[f"pmr_beta_{strong}"]) == 0.0 and float(m.log[f"pmr_beta_{weak}"]) == pytest.approx(0.6)
    assert float(losses[f"pmr_pce_{weak}"]) == pytest.approx(2 * LN2, abs=1e-6)
    assert float(losses[f"pmr_pce_{strong}"]) == pytest.approx(-2 * math.log(0.75), abs=1e-6)  # logged, not used
    assert float(losses["loss"]) == pytest.approx(task + 0.6 * 2 * LN2, abs=1e-6)
    assert float(losses["loss_task"]) == pytest.approx(task)


def test_ema_and_undefined_prototypes():
    # c = (1 - 0.2) * 1 + 0.2 * 3 = 1.4 where both exist; a prototype without new members keeps the old value;
    # one that only the new set has is taken as is.
    new, old = torch.tensor([[[1.0], [5.0]]]), torch.tensor([[[3.0], [7.0]]])
    c, ok = ema(new, old, 0.2, torch.tensor([[True, False]]), torch.tensor([[True, True]]))
    assert c.flatten().tolist() == pytest.approx([1.4, 7.0]) and ok.all()
    c, ok = ema(new, old, 0.2, torch.tensor([[True, True]]), torch.tensor([[False, True]]))
    assert c.flatten().tolist() == pytest.approx([1.0, 0.8 * 5 + 0.2 * 7])


def test_prototype_rows_are_stratified_and_seeded():
    # 10 breasts (0, 0), 3 benign only (1, 0), 1 malignant only (0, 1), none with both: with fraction 0.1,
    # ceil(1.0) = 1, ceil(0.3) = 1, ceil(0.1) = 1 -> 3 rows, one of each combination present.
    labels = np.array([[0, 0]] * 10 + [[1, 0]] * 3 + [[0, 1]])
    rows = np.arange(100, 114)
    picked = prototype_rows(labels, rows, 0.1, seed=0, epoch=0)
    assert len(picked) == 3
    combos = {tuple(labels[r - 100]) for r in picked}
    assert combos == {(0, 0), (1, 0), (0, 1)}
    assert np.array_equal(picked, prototype_rows(labels, rows, 0.1, seed=0, epoch=0))
    assert len(prototype_rows(labels, rows, 1.0, seed=0, epoch=3)) == 14


def test_problems():
    text = " | ".join(method_problems(resolve("default", [
        "reg.method=pmr", "model.family=uni_cc", "methods.pmr.proto_fraction=0", "methods.pmr.momentum=2"])))
    assert "model.family=uni_cc" in text and "proto_fraction=0" in text and "momentum=2" in text
    assert method_problems(resolve("default", ["reg.method=pmr", "model.family=shared"])) == []


def _lines(run_dir):
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if x["kind"] == "epoch"], [x for x in lines if x["kind"] == "step"]


def test_tiny_run_logs_finite_pmr_quantities(tiny_cohort, tmp_path):
    train(resolve("default", tiny_overrides(tiny_cohort, tmp_path / "pmr", **{
        "reg.method": "pmr", "optim.epochs": 1, "run.max_steps": 4})))
    epochs, steps = _lines(tmp_path / "pmr")
    assert len(steps) == 4 and epochs[0]["pmr_proto_rows"] > 0
    assert math.isfinite(epochs[0]["pmr_sep_cc"]) and math.isfinite(epochs[0]["pmr_sep_mlo"])
    for s in steps:
        for k in ("pmr_rho", "pmr_beta_cc", "pmr_beta_mlo", "pmr_pce_cc", "pmr_pce_mlo", "loss_task"):
            assert math.isfinite(s[k]), k
    state = ckpt.load(tmp_path / "pmr" / "last.pt")["methods"]["pmr"]  # the prototypes went into last.pt
    assert set(state) == {"protos", "defined"} and state["protos"]["cc"].shape[:2] == (2, 2)


def test_resume_continues_with_the_saved_prototypes(tiny_cohort, tmp_path):
    over = {"reg.method": "pmr", "methods.pmr.proto_fraction": 0.25, "optim.batch_size": 16,
            "model.input_noise_std": 0.0, "run.prefetch": 0}
    # 3 epochs, cut after 2: the prototypes after epoch 0 REPLACE the initial ones (no history yet), so only a
    # resume after epoch 1 needs the saved EMA (without it the resumed run's weights differ).
    assert_exact_resume(tiny_cohort, tmp_path, over, "pmr", epochs=3)  # identical weights after epoch 3
    (epochs, steps), (resumed, steps_res) = _lines(tmp_path / "full"), _lines(tmp_path / "cut")
    assert [e["epoch"] for e in resumed] == [0, 1, 2]
    for a, b in zip(epochs, resumed):
        for key in ("train_loss", "val_loss", "pmr_sep_cc", "pmr_sep_mlo"):
            assert a[key] == b[key], key
    assert [s["pmr_rho"] for s in steps] == [s["pmr_rho"] for s in steps_res]
