"""QMF (training/methods/qmf.py): energy confidence, the ranking loss, the loss history, the whole loss on a
hand example, exact resume and a tiny training run; expected numbers are worked out in the comments."""
import json
import math
from types import SimpleNamespace

import pytest
import torch

from mvmammo.config import resolve
from mvmammo.models.gates import energy_confidence, gated_logits
from mvmammo.training.loop import train
from mvmammo.training.methods import method_problems
from mvmammo.training.methods.qmf import QMF, History, ranking_loss

from conftest import tiny_overrides

C2 = 0.1 * (1 + math.log(1 + math.exp(-2)))  # conf(u = +-2) = 0.1 logsumexp(1, -1) = 0.1 (1 + ln(1 + e^-2)) = 0.1126928
C0 = 0.1 * math.log(2)  # conf(0) = 0.1 logsumexp(0, 0) = 0.1 ln 2 = 0.0693147


def bce(u, y):  # binary cross-entropy of one logit: ln(1 + e^-u) for y = 1, ln(1 + e^u) for y = 0
    return math.log(1 + math.exp(-u)) if y == 1 else math.log(1 + math.exp(u))


def test_energy_confidence_by_hand():
    conf = energy_confidence(torch.tensor([[2.0, -2.0], [0.0, 0.0]]))
    assert conf.flatten().tolist() == pytest.approx([C2, C2, C0, C0], abs=1e-7)  # symmetric in the class
    # Fused: z = conf_cc u_cc + conf_mlo u_mlo = 0.1126928 * 2 + 0.0693147 * 0 = 0.2253856.
    z = gated_logits("energy", torch.tensor([[2.0]]), torch.tensor([[0.0]]))
    assert float(z) == pytest.approx(2 * C2, abs=1e-7)


def test_ranking_loss_two_samples_by_hand():
    hist = torch.tensor([[0.2], [0.8]])  # breast 0 had the lower loss: it should be the more confident by 0.6
    ok = torch.tensor([True, True])
    # conf (0.3, 0.1): pair (0, 1): r = +1, relu(0.6 - (0.3 - 0.1)) = 0.4; pair (1, 0): r = -1,
    # relu(0.6 - (-1)(0.1 - 0.3)) = 0.4; mean 0.4.
    assert float(ranking_loss(torch.tensor([[0.3], [0.1]]), hist, ok)) == pytest.approx(0.4)
    # conf (0.9, 0.1): the gap 0.8 exceeds the required 0.6: no loss.
    assert float(ranking_loss(torch.tensor([[0.9], [0.1]]), hist, ok)) == 0.0
    # conf (0.1, 0.3): the wrong order: relu(0.6 - (0.1 - 0.3)) = 0.8 for both pairs.
    assert float(ranking_loss(torch.tensor([[0.1], [0.3]]), hist, ok)) == pytest.approx(0.8)
    # Equal histories: r = 0 and a zero margin: no loss whatever the confidences.
    assert float(ranking_loss(torch.tensor([[0.1], [0.3]]), torch.tensor([[0.5], [0.5]]), ok)) == 0.0
    # A breast without a history: both pairs contain it, nothing left to rank.
    assert float(ranking_loss(torch.tensor([[0.1], [0.3]]), hist, torch.tensor([True, False]))) == 0.0


def test_history_running_mean_and_min_max():
    h = History(4, torch.device("cpu"))
    rows = torch.tensor([0, 1, 2])
    h.add(rows, 0, torch.tensor([[1.0, 0.0], [0.5, 0.0], [5.0, 0.0]]), torch.ones(3))
    h.add(torch.tensor([0]), 0, torch.tensor([[3.0, 0.0]]), torch.ones(1))
    h.add(torch.tensor([3]), 0, torch.tensor([[9.0, 0.0]]), torch.zeros(1))  # weight 0: not recorded
    # Running means of label 0: row 0 (1 + 3)/2 = 2, row 1 0.5, row 2 5; min 0.5, max 5:
    # H = (2 - 0.5)/4.5 = 1/3, 0, 1; row 3 unseen.
    hist, seen = h.normalised(torch.tensor([0, 1, 2, 3]), 0)
    assert hist[:3, 0].tolist() == pytest.approx([1 / 3, 0.0, 1.0], abs=1e-6)
    assert seen.tolist() == [True, True, True, False]


def test_whole_loss_by_hand():
    m = QMF(resolve("default", ["reg.method=qmf"]))
    # Split-like model: the stand-alone logits are logits_cc / logits_mlo as given.
    model = SimpleNamespace(view_logits=lambda out: (out["logits_cc"], out["logits_mlo"]))
    u_cc = torch.tensor([[2.0, 2.0], [0.0, 0.0]])
    u_mlo = torch.zeros(2, 2)
    out = {"logits": torch.zeros(2, 2), "logits_cc": u_cc, "logits_mlo": u_mlo}
    batch = {"benign": torch.tensor([1.0, 0.0]), "malignant": torch.tensor([0.0, 1.0]), "rows": [0, 1]}
    hist = m.ensure_history(2, torch.device("cpu"))
    hist.sum[0], hist.sum[1] = 1.0, 3.0  # both views, both labels: row 0 mean 1, row 1 mean 3 -> H = (0, 1)
    hist.count[:] = 1.0
    losses = m.loss(out, batch, SimpleNamespace(model=model, view_mask=None, maker=None))
    # Fused z = (2 C2, 2 C2) for breast 0 and (0, 0) for breast 1; labels (1, 0) and (0, 1).
    z = 2 * C2
    fused = (bce(z, 1) + bce(0, 0)) / 2 + (bce(z, 0) + bce(0, 1)) / 2
    l_cc = (bce(2, 1) + bce(0, 0)) / 2 + (bce(2, 0) + bce(0, 1)) / 2
    l_mlo = 4 * math.log(2) / 2  # every logit 0: ln 2 per sample, mean ln 2 per label, 2 labels
    # Ranking, H = (0, 1): breast 0 should be more confident by 1. CC: conf (C2, C0), both pairs
    # relu(1 - (C2 - C0)) = 0.9566219, summed over 2 labels. MLO: equal confidences, relu(1 - 0) = 1 per label.
    rank_cc, rank_mlo = 2 * (1 - (C2 - C0)), 2.0
    assert float(losses["qmf_rank_cc"]) == pytest.approx(rank_cc, abs=1e-6)
    assert float(losses["qmf_rank_mlo"]) == pytest.approx(rank_mlo, abs=1e-6)
    assert float(losses["qmf_loss_fused"]) == pytest.approx(fused, abs=1e-6)
    assert float(losses["loss"]) == pytest.approx(fused + l_cc + l_mlo + 0.1 * (rank_cc + rank_mlo), abs=1e-6)
    # The fused prediction replaced out["logits"] (train AUC); the history gained this step's per-sample BCE.
    assert out["logits"][0].tolist() == pytest.approx([z, z], abs=1e-6)
    assert float(hist.sum[0, 0, 0]) == pytest.approx(1.0 + bce(2, 1)) and float(hist.count[0, 0]) == 2.0


def test_problems_validate_conf_scale_gate_and_family():
    text = " | ".join(method_problems(resolve("default", [
        "reg.method=qmf", "methods.qmf.conf_scale=0.2", "model.family=uni_cc"])))
    assert "conf_scale=0.2" in text and "model.family=uni_cc" in text
    text = " | ".join(method_problems(resolve("default", ["reg.method=qmf", "model.fusion_gate=none"])))
    assert "model.fusion_gate=none" in text
    assert method_problems(resolve("default", ["reg.method=qmf", "model.family=split"])) == []


def _lines(run_dir):
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if x["kind"] == "epoch"], [x for x in lines if x["kind"] == "step"]


def test_tiny_run_logs_finite_qmf_quantities(tiny_cohort, tmp_path):
    cfg = resolve("default", tiny_overrides(tiny_cohort, tmp_path / "qmf", **{
        "reg.method": "qmf", "optim.epochs": 1, "run.max_steps": 4}))
    assert cfg.model.fusion_gate == "energy"
    train(cfg)
    epochs, steps = _lines(tmp_path / "qmf")
    assert len(steps) == 4 and epochs[0]["qmf_history_rows"] == 4 * cfg.optim.batch_size
    for s in steps:
        for k in ("qmf_loss_fused", "qmf_loss_cc", "qmf_loss_mlo", "qmf_rank_cc", "qmf_rank_mlo",
                  "qmf_conf_cc", "qmf_conf_mlo"):
            assert math.isfinite(s[k]), k
    assert steps[0]["qmf_rank_cc"] == 0.0  # no breast has a history at the first step
    assert (tmp_path / "qmf" / "qmf_state_e0.npz").is_file()


@pytest.mark.slow
def test_resume_continues_with_the_saved_history(tiny_cohort, tmp_path):
    over = {"reg.method": "qmf", "optim.epochs": 2, "optim.batch_size": 16}
    train(resolve("default", tiny_overrides(tiny_cohort, tmp_path / "full", **over)))
    train(resolve("default", tiny_overrides(tiny_cohort, tmp_path / "res", **{**over, "optim.epochs": 1})))
    train(resolve("default", tiny_overrides(tiny_cohort, tmp_path / "res", **over)))
    (full, steps), (res, steps_res) = _lines(tmp_path / "full"), _lines(tmp_path / "res")
    assert [e["epoch"] for e in res] == [0, 1]
    for a, b in zip(full, res):
        for key in ("train_loss", "val_loss", "qmf_history_rows"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key
    assert [s["qmf_rank_cc"] for s in steps] == pytest.approx([s["qmf_rank_cc"] for s in steps_res], rel=1e-6)
