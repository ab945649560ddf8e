"""QMF (training/methods/qmf.py): energy confidence, the ranking loss, the loss history, the whole loss on a
hand example, exact resume and a tiny training run; expected numbers are worked out in the comments."""
import json
import math
from types import SimpleNamespace

import pytest
import torch

from mvmammo.config import resolve
from mvmammo.models.gates import energy_confidence, gated_logits
from mvmammo.training import checkpoint as ckpt
from mvmammo.training.loop import train
from mvmammo.training.methods import method_problems
from mvmammo.training.methods.qmf import QMF, History, ranking_loss

from conftest import tiny_overrides
from resume_check import assert_exact_resume

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
    state = ckpt.load(tmp_path / "qmf" / "last.pt")["methods"]["qmf"]  # the history went into last.pt
    assert int((state["count"].sum(1) > 0).sum()) == 4 * cfg.optim.batch_size


def test_resume_continues_with_the_saved_history(tiny_cohort, tmp_path):
    over = {"reg.method": "qmf", "optim.batch_size": 16, "model.input_noise_std": 0.0, "run.prefetch": 0}
    assert_exact_resume(tiny_cohort, tmp_path, over, "qmf")  # identical weights after epoch 2
    (full, steps), (res, steps_res) = _lines(tmp_path / "full"), _lines(tmp_path / "cut")
    assert [e["epoch"] for e in res] == [0, 1]
    for a, b in zip(full, res):
        for key in ("train_loss", "val_loss", "qmf_history_rows"):
            assert a[key] == b[key], key
    assert [s["qmf_rank_cc"] for s in steps] == [s["qmf_rank_cc"] for s in steps_res]


def _merge_worker(rank: int, world: int, store_path: str, out_dir: str) -> None:
    import torch.distributed as dist
    dist.init_process_group("gloo", store=dist.FileStore(store_path, world), rank=rank, world_size=world)
    try:
        base = History(4, torch.device("cpu"))
        base.add(torch.tensor([0]), 0, torch.tensor([[1.0, 2.0]]), torch.ones(1))  # merged before: row 0 once
        hist = base.copy()
        # This epoch rank 0 trained rows 0 and 1, rank 1 row 2 and row 0 again (each occurrence on one rank).
        rows, loss = ((torch.tensor([0, 1]), torch.tensor([[3.0, 4.0], [5.0, 6.0]])) if rank == 0 else
                      (torch.tensor([2, 0]), torch.tensor([[7.0, 8.0], [9.0, 10.0]])))
        hist.add(rows, 1, loss, torch.ones(2))
        hist.merge_ranks(base)
        torch.save(hist.state(), f"{out_dir}/r{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_history_is_merged_over_ranks_at_the_epoch_end(tmp_path):
    torch.multiprocessing.spawn(_merge_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    a, b = (torch.load(tmp_path / f"r{r}.pt", weights_only=True) for r in range(2))
    for k in ("sum", "count"):
        assert torch.equal(a[k], b[k]), k  # every rank holds the same (global) history
    # View 0: row 0's earlier entry (1, 2), count 1. View 1: row 0 (3, 4) + (9, 10) = (12, 14), count 2;
    # row 1 (5, 6), row 2 (7, 8), count 1 each; row 3 never seen.
    assert a["sum"][0].tolist() == [[1.0, 2.0], [12.0, 14.0]] and a["count"][0].tolist() == [1.0, 2.0]
    assert a["sum"][1, 1].tolist() == [5.0, 6.0] and a["sum"][2, 1].tolist() == [7.0, 8.0]
    assert a["count"][:, 1].tolist() == [2.0, 1.0, 1.0, 0.0] and a["count"][3].tolist() == [0.0, 0.0]
