"""The ResNet-22 column of Wu et al. (2019a/2020): a pre-activation ResNet for one mammographic view.

Layout (SPEC section 3), for an input of (B, C, H, W), C in {1, 3}:
  stem     conv 7x7 / 2, ``width`` filters, no padding, no bias      -> (B, w,  (H-7)//2+1, ...)
  pool     max-pool 3x3 / 2, no padding                               -> (B, w,  ~H/4, ~W/4)
  stage 1  2 pre-activation basic blocks, stride 1, width w           -> (B, w,   ~H/4,   ~W/4)
  stage 2  stride 2, width 2w                                          -> (B, 2w,  ~H/8,   ~W/8)
  stage 3  stride 2, width 4w                                          -> (B, 4w,  ~H/16,  ~W/16)
  stage 4  stride 2, width 8w                                          -> (B, 8w,  ~H/32,  ~W/32)
  stage 5  stride 2, width 16w                                         -> (B, 16w, ~H/64,  ~W/64)
  final    BN + ReLU (a pre-activation net ends un-normalised otherwise)

Padding convention: the 3x3 convolutions pad by 1 (as torchvision's ``conv3x3``, which the reference code
uses); only the stem and the max-pool are unpadded. That is the convention that reproduces the known output
sizes: 42x31 for a 2677x1942 CC window and 47x28 for a 2974x1748 MLO window (tests pin both).
At width 16 with 3 input channels the column has 2,801,104 parameters ("about 2.8 M").
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with the shortcut taken from the pre-activated input.

    Taking the shortcut after the first BN-ReLU (rather than from the raw input) is what the reference's
    "v2" block does when it has a projection; without a projection the identity of the raw input is added.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, project: bool = False):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        # 1x1 projection, no bias (a BN follows in the next block): matches channels and stride.
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False) if project else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        residual = self.shortcut(pre) if self.shortcut is not None else x
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + residual


class ResNet22(nn.Module):
    """One view's column: (B, in_channels, H, W) -> (B, 16*width, h, w) feature map.

    ``width`` is the first stage's channel count (the paper: 16, stages 16..256); narrow columns
    (width 4 or 8) make the tests and the CPU demo fast.
    """

    strides = (1, 2, 2, 2, 2)
    blocks_per_stage = 2

    def __init__(self, in_channels: int = 3, width: int = 16):
        super().__init__()
        if in_channels < 1 or width < 1:
            raise ValueError(f"ResNet22: in_channels and width must be >= 1, got {in_channels}, {width}")
        self.stem = nn.Conv2d(in_channels, width, 7, stride=2, padding=0, bias=False)
        self.pool = nn.MaxPool2d(3, stride=2, padding=0)
        stages = []
        in_ch = width
        for i, stride in enumerate(self.strides):
            out_ch = width * 2**i
            # Every stage's first block projects (the reference does so even in stage 1, where the shapes
            # already match); the rest keep the identity shortcut.
            blocks = [PreActBlock(in_ch, out_ch, stride=stride, project=True)]
            blocks += [PreActBlock(out_ch, out_ch) for _ in range(self.blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.final_bn = nn.BatchNorm2d(in_ch)
        self.out_channels = in_ch  # 16 * width
        self._init_weights()

    def _init_weights(self) -> None:
        # He initialisation for ReLU nets (fan-out, as torchvision's ResNets); BN starts as the identity.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stem(x))     # (B, w, ~H/4, ~W/4)
        x = self.stages(x)              # (B, 16w, ~H/64, ~W/64)
        return F.relu(self.final_bn(x))  # (B, 16w, h, w)
