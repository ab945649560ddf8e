"""View-utilisation metrics: closed forms (Shapley efficiency, utilisation rates), the zero/mean ablation
identity for sum fusion + linear head, the linear probe against scikit-learn, and a Joint model trained on
the cc-only synthetic preset putting CC far above MLO."""
import json

import numpy as np
import pytest
import torch

from mvmammo.analysis.probes import fit_logreg, probe
from mvmammo.analysis.utilization import rates, shapley2, view_aucs
from mvmammo.config import ModelConfig

from conftest import tiny_overrides


def test_shapley_efficiency_and_symmetry():
    rng = np.random.default_rng(0)
    for _ in range(20):
        v_both, v_cc, v_mlo, v_none = rng.uniform(0.3, 1.0, 4)
        s = shapley2(v_both, v_cc, v_mlo, v_none)
        assert s["phi_cc"] + s["phi_mlo"] == pytest.approx(v_both - v_none, abs=1e-12)
    s = shapley2(0.9, 0.9, 0.5)  # MLO adds nothing: all credit to CC
    assert s["phi_cc"] == pytest.approx(0.4) and s["phi_mlo"] == pytest.approx(0.0) and s["imbalance"] == 1.0
    s = shapley2(0.8, 0.7, 0.7)  # symmetric views share equally
    assert s["phi_cc"] == pytest.approx(s["phi_mlo"]) and s["imbalance"] == pytest.approx(0.0)


def test_utilisation_rates_by_hand():
    r = rates(0.8, 0.75, 0.6)
    assert r["u_mlo_given_cc"] == pytest.approx(0.05 / 0.8)
    assert r["u_cc_given_mlo"] == pytest.approx(0.2 / 0.8)
    assert r["above_chance_mlo_given_cc"] == pytest.approx(0.05 / 0.3)
    assert r["above_chance_cc_given_mlo"] == pytest.approx(0.2 / 0.3)
    assert r["d_util"] == pytest.approx(0.05 / 0.8 - 0.2 / 0.8)


def test_zero_and_mean_ablation_give_the_same_auc_for_sum_fusion():
    """logits = W (h_cc + h_mlo) + b: replacing h_v by 0 or by a constant mean shifts every logit by the
    same W mu, so the per-label ranking and hence AUC are identical."""
    from mvmammo.models.multiview import JointResNet

    torch.manual_seed(0)
    model = JointResNet(ModelConfig(width=4, fc_dim=16), in_channels=1).eval()
    rng = np.random.default_rng(1)
    n = 120
    feats = {"h_cc": rng.exponential(1.0, (n, 16)).astype(np.float32),
             "h_mlo": rng.exponential(1.0, (n, 16)).astype(np.float32),
             "y": rng.integers(0, 2, (n, 2))}
    mean = {"h_cc": rng.exponential(1.0, 16).astype(np.float32), "h_mlo": rng.exponential(1.0, 16).astype(np.float32)}
    zero = view_aucs(model, feats, mean, "cpu", "zero")
    meaned = view_aucs(model, feats, mean, "cpu", "mean")
    for label in zero:
        assert zero[label] == pytest.approx(meaned[label], abs=1e-12)
        assert 0.0 < zero[label][1] < 1.0


def test_logistic_probe_matches_sklearn():
    sk = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 10))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=1.0, size=200) > 0).astype(int)
    for c in (0.01, 1.0):
        w, b = fit_logreg(x, y, c)
        ref = sk.LogisticRegression(C=c, tol=1e-10, max_iter=10000).fit(x, y)
        np.testing.assert_allclose(w, ref.coef_[0], atol=1e-5)
        assert b == pytest.approx(ref.intercept_[0], abs=1e-5)
    res = probe((x[:100], y[:100]), (x[100:150], y[100:150]), (x[150:], y[150:]))
    assert res["auc"] > 0.75 and res["C"] > 0


@pytest.fixture(scope="module")
def cc_only_run(tmp_path_factory):
    """A Joint model trained briefly on the cc-only preset (lesions drawn in CC only, never in MLO)."""
    from mvmammo.config import resolve
    from mvmammo.data.synthetic import generate_cohort
    from mvmammo.training.loop import train

    root = tmp_path_factory.mktemp("cconly")
    # 400 breasts, width 8, 5 epochs of ~10 steps: the smallest budget at which this (seeded, deterministic)
    # run had clearly learned (val malignant AUC ~0.83); width 4 or 300 breasts x 4 epochs had not.
    generate_cohort(root / "c", preset="cc-only", breasts=400, size_cc=(64, 48), size_mlo=(64, 48), seed=5,
                    heatmaps=True, progress=False, workers=1)
    cfg = resolve("default", tiny_overrides(root / "c" / "exams.csv", root / "joint-s0", **{
        "optim.epochs": 5, "model.width": 8, "optim.batch_size": 16, "optim.lr": 2e-3, "run.tta": 0}))
    return train(cfg)


@pytest.mark.slow
def test_cc_only_joint_uses_cc(cc_only_run):
    from mvmammo.analysis.utilization import analyze_run
    from mvmammo.report.utilization import format_table

    res = analyze_run(cc_only_run, split="test")
    print(format_table([res], "malignant"))
    lab = res["labels"]["malignant"]
    mean = lab["ablation"]["mean"]
    assert mean["auc_cc_only"] > 0.7 and mean["auc_cc_only"] > mean["auc_mlo_only"] + 0.15, mean
    assert lab["shapley"]["phi_cc"] > lab["shapley"]["phi_mlo"] + 0.1, lab["shapley"]
    assert mean["u_cc_given_mlo"] > mean["u_mlo_given_cc"], mean
    assert lab["probe"]["cc"]["auc"] > lab["probe"]["mlo"]["auc"], lab["probe"]
    saved = json.loads((cc_only_run / "utilization.json").read_text())
    assert saved["labels"]["malignant"]["shapley"] == pytest.approx(lab["shapley"])
