"""NYU's released weights (nyukat/breast_cancer_classifier) in our layout: a key mapping, no code of theirs.

Facts from ../shared/reference/nyu_weights.md. Two kinds of file, both ``torch.load(path)["model"]`` = a state
dict (we read it with ``weights_only=True``: plain tensors, nothing executed):

ResNet-22 models (``*_model.p`` view-wise, ``*__ModeImage_weights.p`` image-wise), 1 or 3 input channels:
  four_view_resnet.<cc|mlo>.first_conv.weight            -> <view>.column.stem.weight
  ....layer_list.<i>.<j>.{bn1,conv1,bn2,conv2}.*         -> <view>.column.stages.<i>.<j>.{same}.*
  ....layer_list.<i>.0.downsample.0.weight               -> <view>.column.stages.<i>.0.shortcut.weight
  ....final_bn.*                                         -> <view>.column.final_bn.*
  (the aliases four_view_resnet.{l,r}_{cc,mlo}. hold the same tensors and are ignored.)
  Image-wise only: fc1_<side><view> Linear(256, 256)     -> <view>.fc (so fc_dim = 256)
                   output_layer_<side><view>.fc_layer Linear(256, 8) viewed as (4, 2), log-softmax per row:
                   row 0 benign, row 1 malignant. A 2-way softmax's class-1 probability is the sigmoid of
                   (w[1] - w[0]) x + (b[1] - b[0]), so our one-logit-per-label head gets those differences
                   (exact). Uni-view and Split families take them as ``<view>.head``. Joint/Shared fuse
                   h_cc + h_mlo into one ``shared.head`` that has no NYU counterpart: it starts as the mean of
                   the CC and MLO heads (not NYU's prediction, which averages probabilities; fine-tune it).
  View-wise files: fc1_cc / fc1_mlo read both breasts' features (512 -> 512) and do not fit a per-breast
                   model, so only the columns are taken; FCs and heads keep a fresh initialisation.
Patch model (``sample_patch_model.p``): a torchvision densenet121(num_classes=4) state dict; the key names are
  ours already (:mod:`mvmammo.models.densenet`). Its 3 input channels are the same grey patch replicated, so
  conv0's weights are summed over the input channels into our 1-channel conv0 (the same convolution). The model
  runs with TensorFlow "SAME" padding (``padding="same"``).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from mvmammo.errors import MvError

COLUMN_PREFIX = "four_view_resnet."
VIEWS = ("cc", "mlo")


class NyuImportError(MvError, ValueError):
    """A file that is not one of NYU's weight files (the message names the file and the missing keys)."""


def read_state(path: str | Path) -> dict:
    """The state dict of an NYU file ({"model": state} or a bare state dict), read as data only."""
    path = Path(path)
    if not path.exists():
        raise NyuImportError(f"{path}: file not found; download NYU's weights yourself and give the file's path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged or code-bearing file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise NyuImportError(f"{path}: not loadable as plain tensors ({first}); give one of NYU's .p weight files")
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise NyuImportError(f"{path}: no state dict (expected {{'model': state_dict}} or a state dict)")
    return state


def kind_of(state: dict) -> str:
    """"patch", "imagewise", "viewwise" or raises."""
    if "features.conv0.weight" in state and "classifier.weight" in state:
        return "patch"
    if any(k.startswith(COLUMN_PREFIX + "cc.") for k in state):
        return "imagewise" if any(k.startswith("fc1_lcc") or k.startswith("fc1_rcc") for k in state) else "viewwise"
    raise NyuImportError("neither an NYU ResNet-22 model (four_view_resnet.cc.*) nor the DenseNet-121 patch model "
                       "(features.conv0.weight, classifier.weight)")


_BLOCK = re.compile(r"layer_list\.(\d+)\.(\d+)\.(.+)$")


def column_key(nyu_key: str) -> str:
    """One column key of NYU's layout (without the view prefix) in our ResNet22's names."""
    if nyu_key.startswith("first_conv."):
        return "stem." + nyu_key[len("first_conv."):]
    m = _BLOCK.match(nyu_key)
    if m:
        i, j, rest = m.groups()
        if rest.startswith("downsample.0."):
            rest = "shortcut." + rest[len("downsample.0."):]
        return f"stages.{i}.{j}.{rest}"
    if nyu_key.startswith("final_bn."):
        return nyu_key
    raise KeyError(nyu_key)


def column_state(state: dict, view: str) -> dict:
    prefix = f"{COLUMN_PREFIX}{view}."
    out = {column_key(k[len(prefix):]): v for k, v in state.items() if k.startswith(prefix)}
    if not out:
        raise NyuImportError(f"no {prefix}* keys; the file is not an NYU ResNet-22 model")
    return out


def binary_head(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NYU's Linear(d, 8) as (4, 2) log-softmax rows -> our (2, d) head: row 0 benign, row 1 malignant."""
    w, b = weight.view(4, 2, -1), bias.view(4, 2)
    return w[:2, 1] - w[:2, 0], b[:2, 1] - b[:2, 0]


def resnet_state(state: dict, family: str, side: str = "l") -> tuple[dict, list[str]]:
    """(our state dict for ``family``, the parameter names it leaves to fresh initialisation)."""
    kind = kind_of(state)
    ours: dict = {}
    side = side.lower()
    for v in VIEWS:
        col = column_state(state, v)
        if family == "shared":
            if v == "cc":   # one column for both views: the CC column (the better view in the paper)
                ours.update({f"shared.column.{k}": t for k, t in col.items()})
        elif family in ("joint", "split") or family == f"uni_{v}":
            ours.update({f"{v}.column.{k}": t for k, t in col.items()})
    fresh = []
    if kind == "imagewise":
        heads = {}
        for v in VIEWS:
            fc, out = f"fc1_{side}{v}", f"output_layer_{side}{v}.fc_layer"
            if f"{fc}.weight" not in state or f"{out}.weight" not in state:
                raise NyuImportError(f"no {fc} / {out} weights for side {side.upper()}")
            heads[v] = binary_head(state[f"{out}.weight"], state[f"{out}.bias"])
            if family in ("joint", "split", "shared") or family == f"uni_{v}":
                ours[f"{v}.fc.weight"], ours[f"{v}.fc.bias"] = state[f"{fc}.weight"], state[f"{fc}.bias"]
            if family == "split" or family == f"uni_{v}":
                ours[f"{v}.head.weight"], ours[f"{v}.head.bias"] = heads[v]
        if family in ("joint", "shared"):
            ours["shared.head.weight"] = (heads["cc"][0] + heads["mlo"][0]) / 2
            ours["shared.head.bias"] = (heads["cc"][1] + heads["mlo"][1]) / 2
            fresh.append("shared.head (mean of the CC and MLO heads)")
    else:
        fresh.append("per-view FC layers and output layers (a view-wise file has no per-breast ones)")
    return ours, fresh


def patch_state(state: dict) -> dict:
    """NYU's patch-model state dict for our 1-channel DenseNet (conv0 summed over its 3 replicated inputs)."""
    out = dict(state)
    out["features.conv0.weight"] = state["features.conv0.weight"].sum(dim=1, keepdim=True)
    return out


def patch_arch(state: dict) -> dict:
    """The DenseNetConfig of a torchvision-layout DenseNet state dict (read from its tensor shapes)."""
    from mvmammo.models.densenet import DenseNetConfig

    blocks = []
    b = 1
    while any(k.startswith(f"features.denseblock{b}.") for k in state):
        n = len({k.split(".")[2] for k in state if k.startswith(f"features.denseblock{b}.")})
        blocks.append(n)
        b += 1
    conv1 = state["features.denseblock1.denselayer1.conv1.weight"]     # (bn_size * growth, in, 1, 1)
    growth = int(state["features.denseblock1.denselayer1.conv2.weight"].shape[0])
    return DenseNetConfig(growth=growth, blocks=tuple(blocks),
                          init_features=int(state["features.conv0.weight"].shape[0]),
                          bn_size=int(conv1.shape[0]) // growth, num_classes=int(state["classifier.weight"].shape[0]),
                          in_channels=1, padding="same").to_dict()
