"""Inference gates (models/gates.py): MLA's entropy gates and QMF's energy confidence, by hand; the model applies
the gate in eval mode only, and config resolves model.fusion_gate from reg.method."""
from __future__ import annotations

import math

import pytest
import torch

from mvmammo.config import ModelConfig, resolve
from mvmammo.models import build_model
from mvmammo.models.gates import binary_entropy, energy_confidence, entropy_weights, gated_logits


def test_entropy_gates_by_hand():
    u_cc, u_mlo = torch.tensor([[0.0, 2.0]]), torch.tensor([[3.0, 2.0]])
    # label 0: H(sigmoid(0)) = ln 2; H(sigmoid(3)) with p = 0.952574: -(p ln p + (1-p) ln(1-p)) = 0.181499
    p = 1 / (1 + math.exp(-3.0))
    h3 = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert float(binary_entropy(torch.tensor(3.0))) == pytest.approx(h3, rel=1e-6)
    w_cc, w_mlo = entropy_weights(u_cc, u_mlo)
    # lambda_v = exp(max e - e_v) / sum_j exp(max e - e_j): the confident MLO view gets the larger gate
    e_max = math.log(2)
    lam_cc = math.exp(0.0) / (math.exp(0.0) + math.exp(e_max - h3))
    assert float(w_cc[0, 0]) == pytest.approx(lam_cc, rel=1e-6)
    assert float(w_mlo[0, 0]) == pytest.approx(1 - lam_cc, rel=1e-6)
    assert float(w_cc[0, 1]) == pytest.approx(0.5)  # equal logits, equal entropies: equal gates
    fused = gated_logits("entropy", u_cc, u_mlo)
    assert float(fused[0, 0]) == pytest.approx(lam_cc * 0.0 + (1 - lam_cc) * 3.0, rel=1e-6)
    assert float(fused[0, 1]) == pytest.approx(2.0)


def test_energy_confidence_is_symmetric_and_by_hand():
    u = torch.tensor([-4.0, 0.0, 4.0])
    conf = energy_confidence(u)
    # 0.1 * log(exp(u/2) + exp(-u/2)): u = 4 -> 0.1 * log(e^2 + e^-2) = 0.1 * 2.0181499
    assert float(conf[2]) == pytest.approx(0.1 * math.log(math.exp(2) + math.exp(-2)), rel=1e-6)
    assert float(conf[0]) == pytest.approx(float(conf[2]))  # a confident negative is as confident as a positive
    assert float(conf[1]) == pytest.approx(0.1 * math.log(2))
    fused = gated_logits("energy", torch.tensor([[4.0, 0.0]]), torch.tensor([[0.0, -4.0]]))
    assert float(fused[0, 0]) == pytest.approx(float(conf[2]) * 4.0, rel=1e-6)
    assert float(fused[0, 1]) == pytest.approx(-float(conf[0]) * 4.0, rel=1e-6)


@pytest.mark.parametrize("family", ["joint", "split"])
def test_model_applies_the_gate_in_eval_only(family):
    torch.manual_seed(0)
    m = build_model(ModelConfig(family=family, width=4, fc_dim=8, fusion_gate="entropy"), in_channels=1)
    cc, mlo = torch.randn(3, 1, 64, 48), torch.randn(3, 1, 64, 48)
    m.train()
    plain = m(cc, mlo)
    assert "logits_sum" not in plain
    m.eval()
    out = m(cc, mlo)
    u_cc, u_mlo = m.view_logits(out)
    torch.testing.assert_close(out["logits"], gated_logits("entropy", u_cc, u_mlo))
    if family == "joint":  # a view alone through the shared head gets the whole bias: W h_v + b
        head = m.shared["head"]
        torch.testing.assert_close(u_cc, head(out["h_cc"]))


def test_fusion_gate_follows_the_method():
    assert resolve("default", ["reg.method=mla"]).model.fusion_gate == "entropy"
    assert resolve("default", ["reg.method=qmf"]).model.fusion_gate == "energy"
    assert resolve("default", ["reg.method=mla", "reg.method=none"]).model.fusion_gate == "none"
    assert resolve("default", ["reg.method=mla", "model.fusion_gate=none"]).model.fusion_gate == "none"
    assert resolve("default", []).model.fusion_gate == "none"
