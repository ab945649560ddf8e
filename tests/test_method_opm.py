"""OPM-style adaptive modality dropout (training/methods/opm.py): drop rates, rescaling, the score ratio, and a
tiny training run; every expected number is worked out by hand in the comments."""
import json
import math

import pytest
import torch

from mvmammo.config import ModelConfig, resolve
from mvmammo.models import build_model
from mvmammo.training.loop import train
from mvmammo.training.methods import method_problems
from mvmammo.training.methods.opm import OPM, drop_rates, drop_theta, opm_mask, unmasked_view_logits
from mvmammo.training.methods.view_scores import balanced_scores, true_class_probability

from conftest import tiny_overrides

LN3 = math.log(3.0)  # sigmoid(ln 3) = 3/4


def test_drop_rates_by_hand():
    # rho_cc = 2: CC dominant. q_cc = 0.4 (1 + 0.5 tanh(relu(2 - 1))) = 0.4 (1 + 0.5 * 0.7615942) = 0.5523188;
    # rho_mlo = 1/2 < 1: q_mlo = 0.
    q = drop_rates(torch.tensor(2.0), 0.4, 0.5)
    assert q.tolist() == pytest.approx([0.4 * (1 + 0.5 * 0.7615941559557649), 0.0], abs=1e-6)
    # rho_cc = 1/3: MLO dominant with rho_mlo = 3: q_mlo = 0.4 (1 + 0.5 tanh(2)) = 0.4 (1 + 0.5 * 0.9640276) = 0.5928055
    q = drop_rates(torch.tensor(1 / 3), 0.4, 0.5)
    assert q.tolist() == pytest.approx([0.0, 0.5928055], abs=1e-6)
    # rho = 1: nobody dominant, nothing dropped.
    assert drop_rates(torch.tensor(1.0), 0.4, 0.5).tolist() == [0.0, 0.0]
    # Clipped to 1: q_base 0.9, alpha 0.5, rho 100: 0.9 (1 + 0.5 * tanh(99)) = 0.9 * 1.5 = 1.35 -> 1.
    assert drop_rates(torch.tensor(100.0), 0.9, 0.5).tolist() == pytest.approx([1.0, 0.0])


def test_theta_and_rescaling_by_hand():
    q = torch.tensor([0.5523188, 0.0])
    # Equal dims: theta = (512 * 0.5523188 + 512 * 0) / 1024 = 0.2761594; unequal dims (3, 1): 3 * 0.5523188 / 4.
    assert float(drop_theta(q, (512, 512))) == pytest.approx(0.2761594, abs=1e-6)
    assert float(drop_theta(q, (3, 1))) == pytest.approx(0.4142391, abs=1e-6)
    # Draws: u_exe 0.2 < p_exe 0.7 -> drop step. Row 0: u_cc 0.9 >= q -> kept; row 1: u_cc 0.1 < q -> dropped.
    u = torch.tensor([[0.9, 0.0], [0.1, 0.0]])
    mask, theta = opm_mask(torch.tensor(0.2), u, q, 0.7, (512, 512))
    scale = 1 / (1 - 0.2761594)  # 1.3815209
    assert mask.flatten().tolist() == pytest.approx([scale, scale, 0.0, scale], abs=1e-5)
    # u_exe 0.8 >= 0.7: no drop step, no mask.
    assert opm_mask(torch.tensor(0.8), u, q, 0.7, (512, 512))[0] is None
    # A breast whose MLO is absent keeps its CC even when drawn for a drop.
    mask, _ = opm_mask(torch.tensor(0.2), u, q, 0.7, (512, 512), present=torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
    assert mask[1, 0] > 0


def test_never_both_dropped_rates_match_q_and_only_the_generator_is_used():
    n = 200_000
    q = drop_rates(torch.tensor(3.0), 0.4, 0.5)  # q_cc = 0.4 (1 + 0.5 tanh 2) = 0.5928055, q_mlo = 0
    g = torch.Generator().manual_seed(5)
    mask, _ = opm_mask(torch.tensor(0.0), torch.rand(n, 2, generator=g), q, 1.0, (8, 8))
    dropped = mask == 0
    assert not bool(dropped.all(1).any())  # both dropped never happens
    assert float(dropped[:, 1].float().mean()) == 0.0
    assert float(dropped[:, 0].float().mean()) == pytest.approx(0.5928055, abs=0.005)  # binomial sd 0.0011


class _Ctx:
    def __init__(self, epoch=0, batch=None):
        self.epoch, self.batch = epoch, batch or {}


def _cfg(**kw):
    return resolve("default", ["reg.method=opm", "model.fc_dim=8"] + [f"{k}={v}" for k, v in kw.items()])


def test_view_mask_is_reproducible_and_resets_each_epoch():
    m1, m2 = OPM(_cfg(**{"methods.opm.p_exe": 1.0})), OPM(_cfg(**{"methods.opm.p_exe": 1.0}))
    cpu = torch.device("cpu")
    # First step of an epoch: rho = 1, nothing dropped, scale 1 (theta 0). Only the given generator is drawn.
    state = torch.get_rng_state()
    mask, w = m1.view_mask(_Ctx(0), 6, torch.Generator().manual_seed(1), cpu)
    assert torch.equal(torch.get_rng_state(), state)
    assert w is None and torch.equal(mask, torch.ones(6, 2))
    # With a stored rho, two methods with the same generator seed give the same mask.
    for m in (m1, m2):
        m.rho, m.epoch = torch.tensor(2.0), 0
    a, _ = m1.view_mask(_Ctx(0), 64, torch.Generator().manual_seed(9), cpu)
    b, _ = m2.view_mask(_Ctx(0), 64, torch.Generator().manual_seed(9), cpu)
    assert torch.equal(a, b) and bool((a[:, 0] == 0).any()) and bool((a[:, 1] > 0).all())
    # A new epoch forgets rho.
    m1.view_mask(_Ctx(1), 4, torch.Generator().manual_seed(1), cpu)
    assert float(m1.log["opm_rho_cc"]) == 1.0


def test_score_ratio_by_hand_and_from_masked_rescaled_logits():
    # Labels (benign, malignant) of 4 breasts; class-balanced score per label, then the mean over labels.
    y = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    # CC benign logits (ln3, 0, 0, -ln3): true-class probabilities 3/4, 1/2, 1/2, 3/4 -> positives 3/4,
    # negatives (1/2 + 1/2 + 3/4)/3 = 7/12 -> (3/4 + 7/12)/2 = 2/3. CC malignant logits 0: score 1/2.
    # s_cc = (2/3 + 1/2)/2 = 7/12; MLO all logits 0: s_mlo = 1/2; rho_cc = (7/12)/(1/2) = 7/6.
    z_cc = torch.tensor([[LN3, 0.0], [0.0, 0.0], [0.0, 0.0], [-LN3, 0.0]])
    z = torch.stack([z_cc, torch.zeros(4, 2)])  # (2 views, B, L)
    (s_cc, s_mlo), ok = balanced_scores(true_class_probability(z, y[None]), y)
    assert bool(ok.all()) and float(s_cc) == pytest.approx(7 / 12) and float(s_mlo) == pytest.approx(0.5)
    assert float(s_cc / s_mlo) == pytest.approx(7 / 6)
    # The hook reads the step's masked, rescaled logits: rebuild them with a real head and check it recovers
    # the same rho. Head W = ones-like, b = (0.2, -0.4): logits_v = W (m h_v) + b/2.
    model = build_model(ModelConfig(family="joint", width=2, fc_dim=2), in_channels=1)
    with torch.no_grad():
        model.shared["head"].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        model.shared["head"].bias.copy_(torch.tensor([0.2, -0.4]))
    b = torch.tensor([0.2, -0.4])
    h_cc = z_cc - b / 2  # W h_cc + b/2 = z_cc
    h_mlo = torch.zeros(4, 2) - b / 2  # W h_mlo + b/2 = 0
    # One extra breast (row 4) whose CC was dropped: it must not enter the scores.
    y5 = torch.cat([y, torch.tensor([[1.0, 0.0]])])
    h_cc5, h_mlo5 = torch.cat([h_cc, torch.full((1, 2), 7.0)]), torch.cat([h_mlo, torch.full((1, 2), 7.0)])
    scale = 1 / (1 - 0.3)
    mask = torch.tensor([[scale, scale]] * 4 + [[0.0, scale]])
    out = model.fuse(h_cc=h_cc5 * mask[:, :1], h_mlo=h_mlo5 * mask[:, 1:])
    out.update(h_cc=h_cc5 * mask[:, :1], h_mlo=h_mlo5 * mask[:, 1:])
    batch = {"benign": y5[:, 0], "malignant": y5[:, 1]}
    m = OPM(_cfg())
    rho = m.update_rho(model, out, batch, mask)
    assert float(rho) == pytest.approx(7 / 6, abs=1e-5)
    # unmasked_view_logits undoes the scale where the view was kept.
    rec = unmasked_view_logits(out["logits_cc"], (b / 2)[None], mask[:, 0])
    assert torch.allclose(rec[:4], z_cc, atol=1e-5)


def test_problems_refuse_uni_view_bad_rates_and_moddrop():
    probs = method_problems(_cfg(**{"model.family": "uni_mlo", "methods.opm.p_exe": 1.5, "reg.moddrop_cc": 0.2}))
    text = " | ".join(probs)
    assert "model.family=uni_mlo" in text and "methods.opm.p_exe=1.5" in text and "reg.moddrop_cc=0" in text
    assert method_problems(_cfg(**{"model.family": "split"})) == []


def test_tiny_training_run_logs_finite_opm_quantities(tiny_cohort, tmp_path):
    cfg = resolve("default", tiny_overrides(tiny_cohort, tmp_path / "opm", **{
        "optim.epochs": 1, "run.max_steps": 4, "reg.method": "opm", "methods.opm.p_exe": 1.0}))
    train(cfg)
    lines = [json.loads(x) for x in (tmp_path / "opm" / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if x["kind"] == "step"]
    assert len(steps) == 4
    keys = ("opm_rho_cc", "opm_q_cc", "opm_q_mlo", "opm_theta", "opm_exe", "opm_drop_cc", "opm_drop_mlo")
    for s in steps:
        assert all(math.isfinite(s[k]) for k in keys)
        assert min(s["opm_q_cc"], s["opm_q_mlo"]) == 0.0  # only the dominant view is ever dropped
    assert steps[0]["opm_rho_cc"] == 1.0 and steps[0]["opm_theta"] == 0.0  # first step of the epoch
    assert any(s["opm_rho_cc"] != 1.0 for s in steps[1:])  # later steps read the previous step's logits


@pytest.mark.slow
def test_resume_is_exact_because_rho_restarts_every_epoch(tiny_cohort, tmp_path):
    over = {"reg.method": "opm", "optim.epochs": 2, "optim.batch_size": 16}

    def lines(run_dir):
        return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]

    train(resolve("default", tiny_overrides(tiny_cohort, tmp_path / "full", **over)))
    train(resolve("default", tiny_overrides(tiny_cohort, tmp_path / "res", **{**over, "optim.epochs": 1})))
    train(resolve("default", tiny_overrides(tiny_cohort, tmp_path / "res", **over)))
    full, res = lines(tmp_path / "full"), lines(tmp_path / "res")
    assert [x["kind"] for x in full] == [x["kind"] for x in res]
    assert any(x.get("opm_theta", 0) > 0 for x in full)  # the drop step ran and dropped views
    for a, b in zip(full, res):
        for key in ("loss", "opm_rho_cc", "opm_q_cc", "opm_q_mlo", "opm_exe", "train_loss", "val_loss"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key


def _one_view_reference(p, y, w, labels):
    """The per-view score as PMR/OPM's former scores.py computed it (one view, loops, float64): per label the mean
    over positives and the mean over negatives of the weighted rows, averaged over the classes present; then the
    mean over the used labels that had a row."""
    per_label = []
    for l in range(y.shape[1]):
        means = [float(p[m, l].double().mean()) for m in ((y[:, l] == c) & (w > 0) for c in (1, 0)) if m.any()]
        if means and bool(labels[l]):
            per_label.append(sum(means) / len(means))
    return (sum(per_label) / len(per_label), True) if per_label else (0.0, False)


def test_one_score_function_agrees_with_the_former_per_view_scores_on_random_batches():
    # PMR and OPM used scores.balanced_score (one view at a time, a label subset), OGM-GE and AGM
    # view_scores.balanced_scores (both views at once); the merged function must give the former's numbers.
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        b = int(torch.randint(1, 12, (1,), generator=g))
        z = 3 * torch.randn(2, b, 2, generator=g)  # (views, B, labels)
        y = (torch.rand(b, 2, generator=g) < 0.3).float()  # rare positives: some batches lack a class
        w = (torch.rand(b, generator=g) < 0.8).float()  # 0/1 sample weights, as PMR and OPM pass
        labels = torch.rand(2, generator=g) < 0.7
        p = true_class_probability(z, y[None])
        s, ok = balanced_scores(p, y, w, labels)
        for v in range(2):
            ref, ref_ok = _one_view_reference(p[v], y, w, labels)
            assert bool(ok[v]) == ref_ok and float(s[v]) == pytest.approx(ref, abs=1e-6)
    # The true-class probability: sigmoid(u) for y = 1, 1 - sigmoid(u) = sigmoid(-u) for y = 0.
    assert true_class_probability(torch.tensor([LN3, LN3]), torch.tensor([1.0, 0.0])).tolist() == \
        pytest.approx([0.75, 0.25])
