"""NYU's weight files: state dicts in NYU's documented layout (../shared/reference/nyu_weights.md) converted to
ours give the same outputs as modules built in that source layout, on random inputs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mvmammo.models.densenet import DenseNet, DenseNetConfig, SameConv2d, same_pads


pytestmark = pytest.mark.usefixtures("one_thread")


# ---- the source layout, built from the description (not from NYU's code) ---------------------------------

class SrcBlock(nn.Module):
    """layer_list.i.j: bn1, conv1, bn2, conv2 and, in each stage's first block, downsample.0 (1x1)."""

    def __init__(self, cin, cout, stride, project):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False)) if project else None

    def forward(self, x):
        out = F.relu(self.bn1(x))
        residual = self.downsample(out) if self.downsample is not None else x
        return self.conv2(F.relu(self.bn2(self.conv1(out)))) + residual


class SrcColumn(nn.Module):
    """first_conv (7x7/2, no padding), max-pool 3/2, layer_list 5 x 2 blocks (16..256), final_bn + ReLU."""

    def __init__(self, cin):
        super().__init__()
        self.first_conv = nn.Conv2d(cin, 16, 7, 2, 0, bias=False)
        stages, c = [], 16
        for i, s in enumerate((1, 2, 2, 2, 2)):
            w = 16 * 2 ** i
            stages.append(nn.Sequential(SrcBlock(c, w, s, True), SrcBlock(w, w, 1, False)))
            c = w
        self.layer_list = nn.ModuleList(stages)
        self.final_bn = nn.BatchNorm2d(256)

    def forward(self, x):
        x = F.max_pool2d(self.first_conv(x), 3, 2)
        for stage in self.layer_list:
            x = stage(x)
        return F.relu(self.final_bn(x))


def _randomise_bn(module):
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)


def nyu_imagewise_state(cin=3, seed=0):
    """An image-wise file's state dict: both columns (plus the per-image aliases), fc1_* and output layers."""
    torch.manual_seed(seed)
    cols = {v: SrcColumn(cin) for v in ("cc", "mlo")}
    state = {}
    for v, col in cols.items():
        _randomise_bn(col)
        for k, t in col.state_dict().items():
            state[f"four_view_resnet.{v}.{k}"] = t
            for side in "lr":
                state[f"four_view_resnet.{side}_{v}.{k}"] = t   # aliases: same tensors under several names
    for name in ("lcc", "rcc", "lmlo", "rmlo"):
        fc, out = nn.Linear(256, 256), nn.Linear(256, 8)
        state.update({f"fc1_{name}.weight": fc.weight.data, f"fc1_{name}.bias": fc.bias.data,
                      f"output_layer_{name}.fc_layer.weight": out.weight.data,
                      f"output_layer_{name}.fc_layer.bias": out.bias.data})
    return state, cols


def nyu_image_probs(state, cols, view, side, x):
    """NYU's image-wise prediction for one image: (p_benign, p_malignant)."""
    name = f"{side}{view}"
    h = cols[view].eval()(x).mean(dim=(2, 3))
    h = F.relu(F.linear(h, state[f"fc1_{name}.weight"], state[f"fc1_{name}.bias"]))
    out = F.linear(h, state[f"output_layer_{name}.fc_layer.weight"], state[f"output_layer_{name}.fc_layer.bias"])
    logp = F.log_softmax(out.view(-1, 4, 2), dim=-1)
    return logp[:, 0, 1].exp(), logp[:, 1, 1].exp()


# ---- ResNet-22 models ------------------------------------------------------------------------------------

@pytest.mark.parametrize("family,view", [("uni_cc", "cc"), ("uni_mlo", "mlo")])
def test_imagewise_file_as_a_uni_view_run_predicts_like_the_source(tmp_path, family, view):
    from mvmammo.commands.weights import import_nyu
    from mvmammo.evaluation.loading import load_model

    state, cols = nyu_imagewise_state()
    torch.save({"model": state}, tmp_path / "ImageHeatmaps__ModeImage_weights.p")
    info = import_nyu(tmp_path / "ImageHeatmaps__ModeImage_weights.p", tmp_path / "run", family, side="R")
    assert info["kind"] == "imagewise" and info["in_channels"] == 3 and not info["fresh"]
    loaded = load_model(tmp_path / "run", device="cpu")
    x = torch.randn(2, 3, 160, 128)
    with torch.no_grad():
        ours = torch.sigmoid(loaded.model(**{view: x})["logits"])      # (B, 2): benign, malignant
        b, m = nyu_image_probs(state, cols, view, "r", x)
    torch.testing.assert_close(ours[:, 0], b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours[:, 1], m, rtol=1e-4, atol=1e-5)


def test_viewwise_file_gives_the_columns_of_a_joint_model(tmp_path):
    from mvmammo.commands.weights import import_nyu
    from mvmammo.evaluation.loading import load_model

    state, cols = nyu_imagewise_state(cin=1, seed=1)
    state = {k: v for k, v in state.items() if k.startswith("four_view_resnet.")}
    state.update({"fc1_cc.weight": torch.randn(512, 512), "fc1_cc.bias": torch.zeros(512),
                  "output_layer_cc.fc_layer.weight": torch.randn(8, 512),
                  "output_layer_cc.fc_layer.bias": torch.zeros(8)})
    torch.save({"model": state}, tmp_path / "sample_image_model.p")
    info = import_nyu(tmp_path / "sample_image_model.p", tmp_path / "run", "joint")
    assert info["kind"] == "viewwise" and info["in_channels"] == 1 and info["fresh"]
    model = load_model(tmp_path / "run", device="cpu").model
    x = torch.randn(1, 1, 192, 128)
    with torch.no_grad():
        for v in ("cc", "mlo"):
            torch.testing.assert_close(model.column(v)(x), cols[v].eval()(x), rtol=1e-4, atol=1e-5)
        assert model(cc=x, mlo=x)["logits"].shape == (1, 2)


def test_a_file_that_is_not_nyus_is_refused_in_one_line(tmp_path):
    from mvmammo.cli import main

    torch.save({"model": {"foo.weight": torch.zeros(2)}}, tmp_path / "x.p")
    assert main(["weights", "import-nyu", str(tmp_path / "x.p"), "--out", str(tmp_path / "run")]) == 1


# ---- the patch model: torchvision DenseNet layout, TensorFlow SAME padding ---------------------------------

def test_same_padding_matches_tensorflow_rule():
    assert same_pads(256, 7, 2) == (2, 3)      # conv0 on a 256 patch: 5 px, the larger half after
    assert same_pads(128, 3, 2) == (0, 1)      # pool0
    assert same_pads(64, 3, 1) == (1, 1)       # 3x3 convs
    assert same_pads(5, 3, 2) == (1, 1)        # size not divisible by the stride: k - (size mod s) = 2
    assert same_pads(8, 1, 1) == (0, 0)
    conv = SameConv2d(1, 2, 7, stride=2, bias=False)
    x = torch.randn(1, 1, 256, 256)
    expected = F.conv2d(F.pad(x, (2, 3, 2, 3)), conv.weight, stride=2)
    torch.testing.assert_close(conv(x), expected)
    assert conv(x).shape[-1] == 128            # TF: ceil(256 / 2)


TINY = dict(growth=4, blocks=(2, 2), init_features=8, bn_size=2, num_classes=4)


def test_patch_file_converts_with_same_outputs(tmp_path):
    from mvmammo.commands.weights import import_nyu
    from mvmammo.heatmaps.infer import load_patch_model

    torch.manual_seed(0)
    src = DenseNet(DenseNetConfig(**TINY, in_channels=3, padding="same"))   # torchvision keys, 3 channels
    _randomise_bn(src)
    src.eval()
    torch.save({"model": src.state_dict()}, tmp_path / "sample_patch_model.p")
    info = import_nyu(tmp_path / "sample_patch_model.p", tmp_path / "run")
    assert info["kind"] == "patch" and info["arch"]["blocks"] == [2, 2] and info["arch"]["padding"] == "same"
    model, meta = load_patch_model(tmp_path / "run")
    assert meta["patch"] == 256
    x = torch.randn(2, 1, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)
        # The padding matters: the same weights with torchvision's padding give other outputs.
        plain = DenseNet(DenseNetConfig(**TINY, in_channels=3, padding="torch")).eval()
        plain.load_state_dict(src.state_dict())
        assert not torch.allclose(plain(x.expand(-1, 3, -1, -1)), src(x.expand(-1, 3, -1, -1)), atol=1e-4)


def test_densenet121_has_torchvisions_parameter_count_and_keys():
    m = DenseNet(DenseNetConfig(in_channels=3))
    # torchvision densenet121(num_classes=4): 6,953,856 feature parameters + 1024 x 4 + 4 classifier.
    assert sum(p.numel() for p in m.parameters()) == 6_957_956
    keys = m.state_dict().keys()
    assert "features.denseblock4.denselayer16.conv2.weight" in keys and "features.transition3.conv.weight" in keys
    assert "features.norm5.running_var" in keys and "classifier.bias" in keys
