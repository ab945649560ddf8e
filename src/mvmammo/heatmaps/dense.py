"""The dense mode (approximate, opt-in): the patch classifier's features computed once over the whole crop.

The exact mode (``patches``, NYU's) runs the DenseNet on every 256-px grid patch: at stride 70 each pixel is seen
by ~13 patches, so a full-size CC crop costs ~875 forward passes. The dense mode runs the network's
convolutional part ONCE over the standardised crop (it is fully convolutional; its feature map has stride
S = 4 * 2^(blocks - 1), 32 for DenseNet-121), then gives each grid patch the feature it would have pooled:

  1. F = relu(features(crop))                       (C, Hf, Wf), fp32 (bf16 autocast on a GPU)
  2. per patch: F resampled on a g x g grid over the patch's footprint, g = P / S (8 for 256 / 32), and
     averaged: torchvision's ``roi_align(F, box, output_size=g, spatial_scale=1/S, sampling_ratio=1,
     aligned=True)`` then the mean, with box = the patch in input px. torchvision is not installed beside this
     project's torch build, so the same sampling is written out here; because the grid is a product of row
     and column starts, it is separable: pooled = Wy F Wx^T, Wy (ny, Hf) the mean of the g bilinear weight
     rows at a patch's sample rows (:func:`footprint_weights`), Wx likewise (tests check it against
     ``grid_sample`` and, where torchvision is present, ``roi_align``);
  3. the classifier layer and softmax per patch; then the same per-pixel averaging as the exact mode.

For a patch whose offset is a multiple of S, the g sample points fall on the centres of its own g x g
feature cells, so this is the network's own global average pool on a feature map computed with context: an
image that is one patch gives exactly the patch model's output (tested). What differs from the exact mode: the
features near a patch's border see the pixels beyond it (context across patch borders) instead of zero
padding, and offsets that are not multiples of S are interpolated. docs/heatmaps.md ("Speed") gives the
measured difference.

Memory (tile rule): a crop of at most ``max_pixels`` (default 8 M px; a full-size CC crop is ~5.2 M) runs in one
piece. A larger one runs in horizontal strips of T rows (T a multiple of S, the largest with
(T + 2 halo) x width <= max_pixels), each computed with ``halo`` extra rows above and below (default: one
patch, rounded up to a multiple of S), keeping only the strip's own feature rows; strips start at multiples of
S, so their feature rows line up with the untiled map, and they differ from it only through context more
than a halo away (which the exact mode never sees either). BN runs in eval mode (the model is in eval()).
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from mvmammo.heatmaps.grid import grid
from mvmammo.patches.image import Prepared

MAX_PIXELS = 8_000_000


def feature_stride(model) -> int:
    """Input px per feature cell: conv0 and pool0 halve twice, every transition halves once more."""
    return 4 * 2 ** (len(model.cfg.blocks) - 1)


def _features(model, x: torch.Tensor, amp: bool) -> torch.Tensor:
    """(h, w) standardised image -> (C, Hf, Wf) float32 = relu(features), what the model's pooling reads."""
    x = x[None, None]
    if model.cfg.in_channels != 1:
        x = x.expand(-1, model.cfg.in_channels, -1, -1)
    if x.is_cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    # No autocast context at all without amp: the FLOP count runs this on the meta device, which has none.
    with torch.autocast(x.device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext():
        h = model.features(x)
    return F.relu(h.float())[0]


@torch.no_grad()
def dense_features(model, image: torch.Tensor, amp: bool = False, max_pixels: int = MAX_PIXELS,
                   halo: int | None = None, patch: int = 256) -> torch.Tensor:
    """relu(features) of the whole (h, w) image, in strips when it exceeds ``max_pixels`` (the tile rule)."""
    s = feature_stride(model)
    h, w = image.shape
    if h * w <= max_pixels:
        return _features(model, image, amp)
    halo = -(-(patch if halo is None else halo) // s) * s      # rounded up to a multiple of S
    t = (max_pixels // w - 2 * halo) // s * s
    if t < s:
        raise ValueError(f"dense heatmaps: max_pixels {max_pixels} leaves no strip of {s} rows with a {halo}-row "
                         f"halo at width {w}; raise max_pixels")
    parts = []
    for r0 in range(0, h, t):
        a, b = max(0, r0 - halo), min(h, r0 + t + halo)
        f = _features(model, image[a:b], amp)
        k0 = (r0 - a) // s
        parts.append(f[:, k0:] if b == h else f[:, k0:k0 + t // s])
        if b == h:
            break
    return torch.cat(parts, 1)


def footprint_weights(first: np.ndarray, patch: int, cell: int, n: int, device=None) -> torch.Tensor:
    """(len(first), n) float32: row i averages the feature cells a patch starting at first[i] samples.

    cell: S, the input px per feature cell (:func:`feature_stride`). roi_align's rule (aligned=True,
    sampling_ratio=1, output g = patch // S): the box [s, s + patch) in input px becomes
    [s/S - 0.5, (s + patch)/S - 0.5) in feature coordinates (cell k's centre at k); bin j's one sample sits at
    its centre u_j; u < -1 or u > n contributes 0, u <= 0 is read at 0, u >= n - 1 at n - 1, else bilinear
    between floor(u) and floor(u) + 1. Each row is the mean over the g samples.
    """
    g = max(patch // cell, 1)
    first = torch.as_tensor(np.asarray(first), dtype=torch.float64, device=device)
    start = first / cell - 0.5
    u = start[:, None] + (torch.arange(g, dtype=torch.float64, device=device) + 0.5) * (patch / cell / g)
    inside = (u >= -1) & (u <= n)
    u = u.clamp(min=0)
    low = u.floor().long()
    top = low >= n - 1
    low = torch.where(top, torch.full_like(low, n - 1), low)
    frac = torch.where(top, torch.zeros_like(u), u - low)
    high = torch.where(top, low, low + 1)
    wts = torch.zeros(len(first), n, dtype=torch.float64, device=device)
    keep = inside.double()
    wts.scatter_add_(1, low, (1 - frac) * keep)
    wts.scatter_add_(1, high, frac * keep)
    return (wts / g).float()


@torch.no_grad()
def dense_grid_probs(model, prep: Prepared, patch: int, stride: int, device="cpu", amp: bool | None = None,
                     max_pixels: int = MAX_PIXELS, halo: int | None = None) -> tuple[torch.Tensor, np.ndarray,
                                                                                    np.ndarray]:
    """(ny, nx, 4) approximate probabilities of the grid patches (dense mode), row and column starts."""
    device = torch.device(device)
    amp = device.type == "cuda" if amp is None else amp
    rows, cols = grid(prep.image.shape, patch, stride)
    img = torch.from_numpy(prep.image).to(device)
    fmap = dense_features(model, img, amp, max_pixels, halo, patch)          # (C, Hf, Wf)
    s = feature_stride(model)
    wy = footprint_weights(rows, patch, s, fmap.shape[1], device)           # (ny, Hf)
    wx = footprint_weights(cols, patch, s, fmap.shape[2], device)           # (nx, Wf)
    pooled = torch.einsum("ia,cab,jb->ijc", wy, fmap, wx)                   # (ny, nx, C)
    logits = model.classifier(pooled.reshape(-1, pooled.shape[-1]))
    probs = F.softmax(logits.float(), dim=1)
    return probs.view(len(rows), len(cols), -1), rows, cols
