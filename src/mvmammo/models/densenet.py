"""DenseNet-121 for the patch classifier, written here with torchvision's module layout and key names.

torchvision cannot be installed beside the CPU torch build this project pins, so the architecture is written
out (Huang et al. 2017, the "BC" variant torchvision ships): the same module tree, so a torchvision
``densenet121`` state dict (and NYU's patch model, which is one) loads with ``load_state_dict`` unchanged:

  features.conv0 (7x7/2, no bias) . norm0 . relu0 . pool0 (max 3x3/2)
  features.denseblock{b}.denselayer{k}: norm1 . relu1 . conv1 (1x1 -> bn_size*growth) . norm2 . relu2 .
      conv2 (3x3 -> growth); its output is concatenated to its input (BN-ReLU-conv ordering)
  features.transition{b}: norm . relu . conv (1x1, channels / 2) . pool (avg 2x2/2)
  features.norm5; then ReLU, global average pool, ``classifier`` (Linear)

DenseNet-121 = growth 32, blocks (6, 12, 24, 16), 64 initial features, bn_size 4: 6,957,956 parameters with a
3-channel input and 4 classes (torchvision's count for num_classes=4). ``growth``/``blocks``/``init_features``
make tiny models for tests. Input: (B, in_channels, P, P) standardised patches; output: logits (B, classes).

Padding: ``padding="torch"`` is torchvision's fixed padding (conv0 3, pool0 1, 3x3 convs 1). ``padding="same"``
reproduces TensorFlow's "SAME" padding, computed per input size for every convolution and max-pool (total
pad = k - s when the size is divisible by s, else k - (size mod s), at least 0; the smaller half before):
NYU's patch model was trained that way. On a 256-px patch the two differ only at conv0 (2/3 instead of 3/3)
and pool0 (0/1 instead of 1/1), which shifts every feature map by a pixel.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

PADDINGS = ("torch", "same")


@dataclass(frozen=True)
class DenseNetConfig:
    growth: int = 32
    blocks: tuple = (6, 12, 24, 16)
    init_features: int = 64
    bn_size: int = 4
    num_classes: int = 4
    in_channels: int = 1      # our patches are grayscale; NYU's 3 replicated channels fold into 1 (nyu_import)
    padding: str = "torch"    # "torch" or "same" (TensorFlow)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["blocks"] = list(self.blocks)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DenseNetConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "blocks" in known:
            known["blocks"] = tuple(int(b) for b in known["blocks"])
        return cls(**known)


def same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding of one axis: (before, after), the larger half after."""
    total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A Conv2d (same parameters and key names) that pads its input TensorFlow-style, per input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        top, bottom = same_pads(x.shape[-2], kh, sh)
        left, right = same_pads(x.shape[-1], kw, sw)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class SameMaxPool2d(nn.MaxPool2d):
    """Max-pool with TensorFlow "SAME" padding (padded cells never win: padded with -inf)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        top, bottom = same_pads(x.shape[-2], k, s)
        left, right = same_pads(x.shape[-1], k, s)
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, k, s)


def _conv(same: bool, cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    if same:
        return SameConv2d(cin, cout, k, stride=stride, bias=False)
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bn_size: int, same: bool):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = _conv(same, cin, bn_size * growth, 1)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = _conv(same, bn_size * growth, growth, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # relu1 must not act in place on x: x is also the concatenation's first part.
        h = self.conv1(F.relu(self.norm1(x)))
        h = self.conv2(self.relu2(self.norm2(h)))
        return torch.cat([x, h], 1)


class DenseBlock(nn.Module):
    """denselayer1..n, each adding ``growth`` channels to its input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            x = layer(x)
        return x


class Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int, same: bool):
        super().__init__(OrderedDict([("norm", nn.BatchNorm2d(cin)), ("relu", nn.ReLU(inplace=True)),
                                      ("conv", _conv(same, cin, cout, 1)),
                                      ("pool", nn.AvgPool2d(2, stride=2))]))


class DenseNet(nn.Module):
    """(B, in_channels, P, P) -> logits (B, num_classes); ``features`` -> (B, C, P/32, P/32)."""

    def __init__(self, cfg: DenseNetConfig = DenseNetConfig()):
        super().__init__()
        if cfg.padding not in PADDINGS:
            raise ValueError(f"DenseNet padding {cfg.padding!r}: use one of {', '.join(PADDINGS)}")
        if min(cfg.growth, cfg.init_features, cfg.bn_size, cfg.num_classes, cfg.in_channels) < 1 or \
                not cfg.blocks or min(cfg.blocks) < 1:
            raise ValueError(f"DenseNet: every size must be >= 1, got {cfg}")
        self.cfg = cfg
        same = cfg.padding == "same"
        pool0 = SameMaxPool2d(3, stride=2) if same else nn.MaxPool2d(3, stride=2, padding=1)
        conv0 = SameConv2d(cfg.in_channels, cfg.init_features, 7, stride=2, bias=False) if same else \
            nn.Conv2d(cfg.in_channels, cfg.init_features, 7, stride=2, padding=3, bias=False)
        layers = OrderedDict([("conv0", conv0), ("norm0", nn.BatchNorm2d(cfg.init_features)),
                              ("relu0", nn.ReLU(inplace=True)), ("pool0", pool0)])
        ch = cfg.init_features
        for b, n in enumerate(cfg.blocks, start=1):
            block = DenseBlock()
            for k in range(1, n + 1):
                block.add_module(f"denselayer{k}", DenseLayer(ch + (k - 1) * cfg.growth, cfg.growth,
                                                              cfg.bn_size, same))
            layers[f"denseblock{b}"] = block
            ch += n * cfg.growth
            if b < len(cfg.blocks):
                layers[f"transition{b}"] = Transition(ch, ch // 2, same)
                ch //= 2
        layers["norm5"] = nn.BatchNorm2d(ch)
        self.features = nn.Sequential(layers)
        self.classifier = nn.Linear(ch, cfg.num_classes)
        self.out_channels = ch
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.features(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))




def densenet121(**overrides) -> DenseNet:
    return DenseNet(DenseNetConfig(**overrides))
