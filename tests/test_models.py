"""Model tests: registry-wide shape/NaN/backward checks, naming rule, the paper's column, fusion identities.

Narrow columns (width 4) on 64x48 inputs keep every test fast on CPU; the full-resolution output sizes are
checked on the meta device (shapes only, no compute).
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from mvmammo.config import ModelConfig
from mvmammo.models import (MODEL_FAMILIES, PARAMETER_GROUPS, ResNet22, build_backbone, build_model,
                            parameter_group, register_backbone)
from mvmammo.models import backbones as backbones_mod
from mvmammo.models.heads import GaussianNoise, mean_probability_logit

TWO_VIEW = ("joint", "shared", "split")
SMALL = dict(width=4, fc_dim=16)
B, H, W = 2, 64, 48


def make(family: str, in_channels: int = 3, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(family=family, **{**SMALL, **kw}), in_channels)


def inputs(in_channels: int = 3, batch: int = B):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(batch, in_channels, H, W, generator=g), torch.randn(batch, in_channels, H, W, generator=g))


def test_registry_lists_all_paper_families():
    assert set(MODEL_FAMILIES) >= {"uni_cc", "uni_mlo", "joint", "shared", "split"}
    with pytest.raises(ValueError, match="unknown model family"):
        build_model(ModelConfig(family="nope"), 3)
    with pytest.raises(ValueError, match="in_channels"):
        build_model(ModelConfig(family="joint"), 2)


@pytest.mark.parametrize("family", MODEL_FAMILIES)
@pytest.mark.parametrize("in_channels,aux", [(3, False), (1, True)])
def test_forward_backward_finite(family, in_channels, aux):
    model = make(family, in_channels, aux_heads=aux).train()
    cc, mlo = inputs(in_channels)
    out = model(cc, mlo)
    views = model.views
    assert views in (("cc",), ("mlo",), ("cc", "mlo"))
    expected = {"logits"} | {f"h_{v}" for v in views} | {f"logits_{v}" for v in views}
    if aux:
        expected |= {f"aux_logits_{v}" for v in views}
    assert set(out) == expected
    for key, value in out.items():
        want = (B, SMALL["fc_dim"]) if key.startswith("h_") else (B, 2)
        assert value.shape == want, key
        assert torch.isfinite(value).all(), key
    target = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    loss = sum(F.binary_cross_entropy_with_logits(v, target) for k, v in out.items() if "logits" in k)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{family}: {name} got no gradient"
        assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_encode_then_fuse_reproduces_forward(family):
    model = make(family).eval()
    cc, mlo = inputs()
    with torch.no_grad():
        out = model(cc, mlo)
        enc = model.encode(cc, mlo)
        fused = model.fuse(**{f"h_{v}": enc[f"h_{v}"] for v in model.views})
    for key, value in fused.items():
        torch.testing.assert_close(value, out[key])


def test_uni_view_models_ignore_the_other_view():
    cc, mlo = inputs()
    assert make("uni_cc").eval()(cc, None)["logits"].shape == (B, 2)
    assert make("uni_mlo").eval()(None, mlo)["logits"].shape == (B, 2)
    with pytest.raises(ValueError, match="MLO"):
        make("uni_mlo")(cc, None)


# The naming rule: one view's parameters under cc./mlo., both views' under shared., blending heads under aux_*.
EXPECTED_PARTS = {
    "uni_cc": {"cc.column", "cc.fc", "cc.head"},
    "uni_mlo": {"mlo.column", "mlo.fc", "mlo.head"},
    "joint": {"cc.column", "cc.fc", "mlo.column", "mlo.fc", "shared.head"},
    "shared": {"shared.column", "cc.fc", "mlo.fc", "shared.head"},
    "split": {"cc.column", "cc.fc", "cc.head", "mlo.column", "mlo.fc", "mlo.head"},
}


@pytest.mark.parametrize("family", MODEL_FAMILIES)
@pytest.mark.parametrize("aux", [False, True])
def test_parameter_names_carry_group_prefixes(family, aux):
    model = make(family, aux_heads=aux)
    names = [n for n, _ in model.named_parameters()]
    assert all(parameter_group(n) in PARAMETER_GROUPS for n in names)
    parts = {".".join(n.split(".")[:2]) for n in names}
    expected = set(EXPECTED_PARTS.get(family, parts))
    if aux:
        expected |= {f"aux_{v}.{p}" for v in model.views for p in ("fc", "head")}
    assert parts == expected


def test_uni_view_weights_load_into_joint_columns():
    # Pretraining relies on this: a uni-view model's cc.column/cc.fc keys are the Joint model's keys.
    uni, joint = make("uni_cc"), make("joint")
    state = {k: v for k, v in uni.state_dict().items() if k.startswith(("cc.column.", "cc.fc."))}
    missing, unexpected = joint.load_state_dict(state, strict=False)
    assert not unexpected and not any(k.startswith("cc.") for k in missing)


def test_resnet22_parameter_count_pinned():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ResNet22(in_channels=3, width=16)) == 2_801_104  # "about 2.8 M per column" (SPEC 3)
    # The image-only column differs only in the stem: 2 fewer input channels x 16 filters x 7 x 7.
    assert count(ResNet22(in_channels=1, width=16)) == 2_801_104 - 2 * 16 * 49


@pytest.mark.parametrize("size,expected", [((2677, 1942), (42, 31)), ((2974, 1748), (47, 28))])
def test_resnet22_output_size_at_full_resolution(size, expected):
    # Meta tensors carry shapes only: the full-resolution forward costs no compute or memory.
    column = ResNet22(in_channels=3, width=16).to("meta")
    out = column(torch.empty(1, 3, *size, device="meta"))
    assert tuple(out.shape) == (1, 256, *expected)


@pytest.mark.parametrize("family", ["joint", "shared"])
def test_sum_fusion_per_view_logits_add_up(family):
    model = make(family).eval()
    with torch.no_grad():
        out = model(*inputs())
    torch.testing.assert_close(out["logits"], out["logits_cc"] + out["logits_mlo"], atol=1e-5, rtol=1e-5)
    head = model.shared["head"]
    torch.testing.assert_close(out["logits_cc"], out["h_cc"] @ head.weight.T + head.bias / 2)


def test_split_logits_are_the_averaged_probability():
    model = make("split").eval()
    with torch.no_grad():
        out = model(*inputs())
    p_mean = (torch.sigmoid(out["logits_cc"]) + torch.sigmoid(out["logits_mlo"])) / 2
    target = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    torch.testing.assert_close(F.binary_cross_entropy_with_logits(out["logits"], target),
                               F.binary_cross_entropy(p_mean, target))
    torch.testing.assert_close(torch.sigmoid(out["logits"]), p_mean)


def test_mean_probability_logit_is_stable_for_large_logits():
    a = torch.tensor([1e4, -1e4, 1e4, -1e4, 50.0, 3.0, -80.0, 0.0], requires_grad=True)
    b = torch.tensor([1e4, -1e4, -1e4, 1e4, 40.0, -2.0, -90.0, 0.0])
    z = mean_probability_logit(a, b)
    z.sum().backward()
    assert torch.isfinite(z).all() and torch.isfinite(a.grad).all()
    # Both at +-1e4: the average is the same saturated probability; opposite: exactly 1/2 (logit 0).
    assert z[0] > 1e3 and z[1] < -1e3 and z[2] == 0 and z[3] == 0
    # Where float64 arithmetic is exact enough, compare with the naive formula.
    a64, b64 = a.detach()[4:].double(), b[4:].double()
    p = (torch.sigmoid(a64) + torch.sigmoid(b64)) / 2
    naive = torch.log(p) - torch.log1p(-p)
    torch.testing.assert_close(z[5:].double(), naive[1:], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(z[4].double(), torch.log(torch.tensor(2.0, dtype=torch.float64)) + 40, atol=1e-3, rtol=0)


@pytest.mark.parametrize("family", TWO_VIEW)
def test_view_mask_zero_equals_fusing_zero_features(family):
    model = make(family).eval()
    cc, mlo = inputs()
    with torch.no_grad():
        enc = model.encode(cc, mlo)
        # Row 0 drops MLO, row 1 drops CC: the mask acts per sample.
        out = model(cc, mlo, view_mask=torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        h_cc, h_mlo = enc["h_cc"].clone(), enc["h_mlo"].clone()
        h_mlo[0] = 0
        h_cc[1] = 0
        ref = model.fuse(h_cc, h_mlo)
    for key in ("logits", "logits_cc", "logits_mlo"):
        torch.testing.assert_close(out[key], ref[key])
    assert (out["h_mlo"][0] == 0).all() and (out["h_cc"][1] == 0).all()
    with pytest.raises(ValueError, match="view_mask"):
        model(cc, mlo, view_mask=torch.ones(B, 3))


def test_input_noise_only_in_training_mode():
    noise = GaussianNoise(0.5)
    x = torch.zeros(4000)
    assert torch.equal(noise.eval()(x), x)
    torch.manual_seed(0)
    y = noise.train()(x)
    assert 0.45 < y.std().item() < 0.55 and abs(y.mean().item()) < 0.05
    assert torch.equal(GaussianNoise(0.0).train()(x), x)

    model = make("joint", input_noise_std=0.5)
    cc, mlo = inputs()
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(cc, mlo)["logits"], model(cc, mlo)["logits"])
        model.train()
        assert not torch.equal(model(cc, mlo)["logits"], model(cc, mlo)["logits"])
    quiet = make("joint", input_noise_std=0.0).train()
    with torch.no_grad():
        assert torch.equal(quiet(cc, mlo)["logits"], quiet(cc, mlo)["logits"])


def test_backbone_is_swappable_by_name():
    class PoolColumn(torch.nn.Module):
        """A parameter-light column: a 1x1 conv to 2*width channels, then a 4x4 average pool."""

        def __init__(self, in_channels, width):
            super().__init__()
            self.proj = torch.nn.Conv2d(in_channels, 2 * width, 1)
            self.out_channels = 2 * width

        def forward(self, x):
            return F.avg_pool2d(self.proj(x), 4)

    register_backbone("test_pool")(PoolColumn)
    try:
        for family in MODEL_FAMILIES:
            model = make(family, backbone="test_pool")
            assert all(isinstance(model.column(v), PoolColumn) for v in model.views)
            out = model(*inputs())
            assert out["logits"].shape == (B, 2) and torch.isfinite(out["logits"]).all()
        tiny = make("joint", backbone="tiny")
        assert tiny(*inputs())["h_cc"].shape == (B, SMALL["fc_dim"])
    finally:
        backbones_mod._BACKBONES.pop("test_pool", None)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("no_such_column", 3, 4)


def test_timm_backbone_needs_timm():
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install timm"):
            build_backbone("timm:resnet18", 3, 16)
    else:
        pytest.skip("timm installed; the error path is not reachable")


def test_config_defaults_build_the_paper_joint_model():
    cfg = ModelConfig()
    model = build_model(dataclasses.replace(cfg, input_noise_std=0.0), 3)
    n_column = sum(p.numel() for p in model.cc["column"].parameters())
    assert n_column == 2_801_104
    fc = model.cc["fc"]
    assert (fc.in_features, fc.out_features) == (256, 512)
