"""Gradient norm per parameter group: equal to a hand computation, groups by name prefix, no host sync."""
import math

import pytest
import torch
from torch import nn

from mvmammo.analysis.grad_norms import GradNormHook, group_norms


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.cc = nn.Linear(2, 1, bias=False)
        self.mlo = nn.Linear(2, 1, bias=True)
        self.shared = nn.ModuleDict({"head": nn.Linear(1, 1, bias=False)})
        self.frozen = nn.Linear(1, 1)


def test_group_norms_by_hand():
    m = _Toy()
    with torch.no_grad():
        m.cc.weight.copy_(torch.tensor([[3.0, 4.0]]))
        m.mlo.weight.copy_(torch.tensor([[1.0, 2.0]]))
        m.mlo.bias.copy_(torch.tensor([2.0]))
        m.shared["head"].weight.copy_(torch.tensor([[-2.0]]))
    m.cc.weight.grad = torch.tensor([[1.0, 2.0]])
    m.mlo.weight.grad = torch.tensor([[2.0, 0.0]])
    m.mlo.bias.grad = torch.tensor([1.0])
    m.shared["head"].weight.grad = torch.tensor([[-0.5]])
    out = group_norms(m)
    assert set(out) == {f"{k}_{g}" for k in ("grad_norm", "rel_grad_norm") for g in ("cc", "mlo", "shared")}
    assert float(out["grad_norm_cc"]) == pytest.approx(math.sqrt(1 + 4))
    assert float(out["grad_norm_mlo"]) == pytest.approx(math.sqrt(4 + 0 + 1))
    assert float(out["grad_norm_shared"]) == pytest.approx(0.5)
    assert float(out["rel_grad_norm_cc"]) == pytest.approx(math.sqrt(5) / 5)
    assert float(out["rel_grad_norm_mlo"]) == pytest.approx(math.sqrt(5) / 3)
    assert float(out["rel_grad_norm_shared"]) == pytest.approx(0.25)
    assert all(v.dim() == 0 for v in out.values())  # 0-d tensors: the loop syncs once per epoch


def test_joint_model_groups_match_flattened_norms():
    from mvmammo.config import ModelConfig
    from mvmammo.models.multiview import JointResNet

    torch.manual_seed(0)
    m = JointResNet(ModelConfig(width=4, fc_dim=16, aux_heads=True), in_channels=1)
    x = torch.randn(3, 1, 64, 48)
    out = m(x, x.flip(-1))
    (out["logits"].sum() + out["aux_logits_cc"].sum() + out["aux_logits_mlo"].sum()).backward()
    norms = GradNormHook().after_backward(type("Ctx", (), {"model": m})())
    for g in ("cc", "mlo", "shared", "aux_cc", "aux_mlo"):
        grads = torch.cat([p.grad.reshape(-1) for n, p in m.named_parameters() if n.split(".")[0] == g])
        assert float(norms[f"grad_norm_{g}"]) == pytest.approx(float(grads.double().norm()), rel=1e-5)
