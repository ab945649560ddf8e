"""Heatmaps of one image: every patch of the grid through the patch classifier, in large batches.

Fast path (:func:`image_heatmaps`): the standardised crop goes to the device once; the patches are views of it
(``unfold`` twice gives every (P, P) window without copying) gathered a batch at a time, so no patch is cut on
the CPU; on a GPU the forward runs in bf16 autocast with channels_last. The softmax probabilities of the grid
(ny, nx, 4) are averaged per pixel by :func:`mvmammo.heatmaps.grid.average`. The plain reference
(:func:`image_heatmaps_loop`) cuts and classifies one patch at a time and accumulates block by block; a test
checks that both give the same heatmap. The device part (:func:`infer_grid`: patch grid -> probabilities) and the
host part (:func:`render`: grid -> per-pixel maps) are separate functions so that the table command can run
them on different threads (:mod:`mvmammo.heatmaps.pipeline`).

Constant patches (every pixel equal, e.g. pure background) are found without cutting them
(:mod:`mvmammo.heatmaps.constant`); one representative per distinct value goes through the network and its
probabilities are copied to the others (exact: the network sees nothing but the patch). ``mode="dense"``
(:mod:`mvmammo.heatmaps.dense`) is the approximate alternative: features once over the whole crop.

Class order (NYU's): 0 malignant, 1 benign, 2 outside, 3 negative. Heatmaps are returned at the source image's
size: the averaged map inside the crop box, 0 outside it (background).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mvmammo.heatmaps.constant import constant_patches
from mvmammo.heatmaps.grid import average_loop, average_numpy, grid
from mvmammo.patches.image import Prepared, prepare
from mvmammo.patches.runs import CLASSES

BENIGN, MALIGNANT = CLASSES.index("benign"), CLASSES.index("malignant")
MODES = ("patches", "dense")   # patches: NYU-exact, every grid patch; dense: features once per crop (approximate)


@dataclass
class ImageHeatmaps:
    benign: np.ndarray      # float32 (H, W) in [0, 1]
    malignant: np.ndarray   # float32 (H, W)
    probs: np.ndarray       # float32 (ny, nx, 4): the patch grid's class probabilities
    rows: np.ndarray        # row starts in the crop (px)
    cols: np.ndarray        # column starts in the crop (px)
    box: tuple              # the crop box in the source image (y0, x0, y1, x1)
    computed: int = -1      # patches that went through the network (patches mode; -1 in dense mode)
    mode: str = "patches"

    @property
    def patches(self) -> int:
        return int(self.probs.shape[0] * self.probs.shape[1])


def load_patch_model(run: str | Path, which: str = "best", device="cpu") -> tuple[torch.nn.Module, dict]:
    """The patch classifier of a run folder (``best.pt``, else ``last.pt``) and its settings dict."""
    from mvmammo.errors import MvError
    from mvmammo.models.densenet import DenseNet, DenseNetConfig
    from mvmammo.training.checkpoint import load, load_model_state

    run = Path(run)
    path = run / f"{which}.pt"
    if not path.exists() and which == "best":
        path = run / "last.pt"
    if not path.exists():
        raise MvError(f"{run}: no best.pt or last.pt; train a patch classifier there first (mvmammo patches train) "
                      "or import one (mvmammo weights import-nyu)")
    ckpt = load(path)
    if "arch" not in ckpt:
        raise MvError(f"{path}: not a patch classifier checkpoint (no 'arch' entry); give the run folder of "
                      "`mvmammo patches train` or `mvmammo weights import-nyu`")
    model = DenseNet(DenseNetConfig.from_dict(ckpt["arch"]))
    load_model_state(model, ckpt["model"], path=path)
    model.eval().to(device)
    if torch.device(device).type == "cuda":
        model.to(memory_format=torch.channels_last)   # the batches are channels_last there (_forward)
    info = {"patch": int(ckpt.get("patch", 256)), "checkpoint": str(path), "arch": ckpt["arch"]}
    return model, info


def _forward(model, batch: torch.Tensor, amp: bool) -> torch.Tensor:
    """(B, 1, P, P) standardised patches -> (B, 4) float32 probabilities."""
    in_ch = model.cfg.in_channels
    if in_ch != 1:
        batch = batch.expand(-1, in_ch, -1, -1)   # NYU-style models read the patch replicated to 3 channels
    if batch.is_cuda:
        batch = batch.contiguous(memory_format=torch.channels_last)
    with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(batch)
    return F.softmax(logits.float(), dim=1)


def _run(model, patches, n: int, batch_size: int, amp: bool, out: torch.Tensor, idx: torch.Tensor) -> None:
    """out[idx[k]] = probabilities of patches(s, e) for consecutive slices [s, e) of n patches."""
    for s in range(0, n, batch_size):
        e = min(s + batch_size, n)
        out[idx[s:e]] = _forward(model, patches(s, e), amp)


@torch.no_grad()
def grid_probs(model, prep: Prepared, patch: int, stride: int, batch_size: int = 256, device="cpu",
               amp: bool | None = None, dedup: bool = True) -> tuple[torch.Tensor, np.ndarray, np.ndarray, int]:
    """(ny, nx, 4) probabilities of every grid patch of a prepared crop (on ``device``), row and column starts,
    and how many patches went through the network (fewer than ny * nx when constant patches were shared)."""
    device = torch.device(device)
    amp = device.type == "cuda" if amp is None else amp
    rows, cols = grid(prep.image.shape, patch, stride)
    img = torch.from_numpy(prep.image).to(device)
    windows = img.unfold(0, patch, 1).unfold(1, patch, 1)    # (H-P+1, W-P+1, P, P) view, no copy
    ri = torch.as_tensor(rows, device=device).repeat_interleave(len(cols))
    ci = torch.as_tensor(cols, device=device).repeat(len(rows))
    out = torch.empty(len(ri), len(CLASSES), device=device)
    const = torch.zeros(len(ri), dtype=torch.bool, device=device)
    if dedup:
        const, value = constant_patches(img, rows, cols, patch)
        const, value = const.reshape(-1), value.reshape(-1)
    vary = torch.nonzero(~const).view(-1)
    # Patches with content: gathered from the windows view a batch at a time, (B, 1, P, P) copies.
    _run(model, lambda s, e: windows[ri[vary[s:e]], ci[vary[s:e]]].unsqueeze(1), len(vary), batch_size, amp,
         out, vary)
    computed = len(vary)
    if bool(const.any()):
        same = torch.nonzero(const).view(-1)
        values, which = torch.unique(value[same], return_inverse=True)     # one representative per value
        rep = torch.empty(len(values), len(CLASSES), device=device)
        _run(model, lambda s, e: values[s:e].view(-1, 1, 1, 1).expand(-1, 1, patch, patch), len(values),
             batch_size, amp, rep, torch.arange(len(values), device=device))
        out[same] = rep[which]
        computed += len(values)
    return out.view(len(rows), len(cols), len(CLASSES)), rows, cols, computed


def _place(maps: np.ndarray, box: tuple, shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(benign, malignant) at the source size from the crop's (2, h, w) maps: in its box, 0 elsewhere."""
    y0, x0, y1, x1 = box
    full = np.zeros((2,) + tuple(shape), np.float32)
    full[:, y0:y1, x0:x1] = maps[:, :y1 - y0, :x1 - x0]
    return np.clip(full[0], 0, 1), np.clip(full[1], 0, 1)


@dataclass
class Grid:
    """What the device computes for one image: the patch grid's probabilities (on the host) and where it lies."""
    probs: np.ndarray       # float32 (ny, nx, 4)
    rows: np.ndarray        # row starts in the crop (px)
    cols: np.ndarray        # column starts in the crop (px)
    crop_shape: tuple       # (h, w) of the standardised crop (padded to at least one patch)
    box: tuple              # the crop box in the source image (y0, x0, y1, x1)
    shape: tuple            # the source image's (H, W)
    computed: int = -1      # patches through the network (patches mode; -1 in dense mode)
    mode: str = "patches"


@torch.no_grad()
def infer_grid(model, prep: Prepared, patch: int = 256, stride: int = 70, batch_size: int = 256, device="cpu",
               amp: bool | None = None, mode: str = "patches", dedup: bool = True) -> Grid:
    """The device part of :func:`image_heatmaps`: the grid's class probabilities of a prepared crop."""
    from mvmammo.heatmaps.dense import dense_grid_probs

    if mode not in MODES:
        raise ValueError(f"heatmap mode {mode!r}: use one of {', '.join(MODES)}")
    if mode == "dense":
        probs, rows, cols = dense_grid_probs(model, prep, patch, stride, device, amp)
        computed = -1
    else:
        probs, rows, cols, computed = grid_probs(model, prep, patch, stride, batch_size, device, amp, dedup)
    return Grid(probs.float().cpu().numpy(), rows, cols, tuple(prep.image.shape), prep.box, prep.shape,
                computed, mode)


def render(g: Grid, patch: int = 256) -> ImageHeatmaps:
    """The host part: the per-pixel average of the grid (on the CPU; it is exact and costs one write of the
    maps, so it needs no device) placed at the source image's size."""
    # Only the two channels the models read are rendered (the grid keeps all four classes).
    maps = average_numpy(g.probs[..., [BENIGN, MALIGNANT]], g.rows, g.cols, patch, g.crop_shape)
    benign, malignant = _place(maps, g.box, g.shape)
    return ImageHeatmaps(benign, malignant, g.probs, g.rows, g.cols, g.box, g.computed, g.mode)


@torch.no_grad()
def image_heatmaps(model, img: np.ndarray, patch: int = 256, stride: int = 70, batch_size: int = 256,
                   device="cpu", amp: bool | None = None, crop_margin: int = 20, mode: str = "patches",
                   dedup: bool = True) -> ImageHeatmaps:
    """Benign and malignant heatmaps of a uint16 (H, W) image (the fast path; ``mode`` in :data:`MODES`)."""
    prep = prepare(img, patch, crop_margin)
    return render(infer_grid(model, prep, patch, stride, batch_size, device, amp, mode, dedup), patch)


@torch.no_grad()
def image_heatmaps_loop(model, img: np.ndarray, patch: int = 256, stride: int = 70,
                        crop_margin: int = 20) -> ImageHeatmaps:
    """The plain reference: one patch at a time, cut with numpy slicing, accumulated block by block."""
    prep = prepare(img, patch, crop_margin)
    rows, cols = grid(prep.image.shape, patch, stride)
    probs = np.zeros((len(rows), len(cols), len(CLASSES)), np.float32)
    for i, y in enumerate(rows):
        for j, x in enumerate(cols):
            p = torch.from_numpy(prep.image[y:y + patch, x:x + patch].copy())[None, None]
            probs[i, j] = _forward(model, p, False)[0].numpy()
    maps = average_loop(probs, rows, cols, patch, prep.image.shape)[[BENIGN, MALIGNANT]]
    benign, malignant = _place(maps, prep.box, prep.shape)
    return ImageHeatmaps(benign, malignant, probs, rows, cols, prep.box, probs.shape[0] * probs.shape[1])
