"""Batched window augmentation as tensor ops (CPU or GPU).

Input: cached windows (B, C, H + 2m, W + 2m) with m px of context on each side. Training draws, per sample,
a size noise ds and a position noise (dy, dx), cuts the window of size (H + ds, W + ds * W/H) centred at
(dy, dx) from the centre, and resizes it back to (H, W) with one affine_grid + grid_sample. The box always
stays inside the cached window: |dy| + max(ds, 0)/2 <= m. Then the image channel is standardised per window
(mean 0, std 1) and the heatmap channels are mapped to [0, 1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mvmammo.data.cache import HEATMAP_SCALE


def sample_boxes(batch: int, margin: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, 3) float: (ds, dy, dx) in cached px, with ds in [-m, m] and |dy|, |dx| <= m - max(ds, 0)/2."""
    u = torch.rand(batch, 3, generator=generator)
    ds = (2 * u[:, 0] - 1) * margin
    room = margin - ds.clamp(min=0) / 2
    dy = (2 * u[:, 1] - 1) * room
    dx = (2 * u[:, 2] - 1) * room
    return torch.stack([ds, dy, dx], dim=1)


def crop_resize(x: torch.Tensor, size: tuple[int, int], boxes: torch.Tensor | None, mode: str = "bilinear"
                ) -> torch.Tensor:
    """Cut per-sample boxes from x (B, C, Hp, Wp) and resize to size -> (B, C, H, W).

    boxes None = the deterministic centre window (a plain slice, no resampling).
    """
    b, c, hp, wp = x.shape
    h, w = size
    if boxes is None:
        my, mx = (hp - h) // 2, (wp - w) // 2
        return x[:, :, my:my + h, mx:mx + w]
    boxes = boxes.to(device=x.device, dtype=torch.float32)
    ds, dy, dx = boxes.unbind(1)
    box_h = h + ds
    box_w = w + ds * (w / h)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=torch.float32)
    # affine_grid maps output coords in [-1, 1] to input coords in [-1, 1] (align_corners=False).
    theta[:, 0, 0] = box_w / wp
    theta[:, 1, 1] = box_h / hp
    theta[:, 0, 2] = 2 * dx / wp
    theta[:, 1, 2] = 2 * dy / hp
    grid = F.affine_grid(theta, [b, c, h, w], align_corners=False)
    return F.grid_sample(x, grid.to(x.dtype), mode=mode, padding_mode="zeros", align_corners=False)


def normalise(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Channel 0 standardised per window; heatmap channels (uint16 scale) to [0, 1]."""
    img = x[:, :1]
    mean = img.mean(dim=(2, 3), keepdim=True)
    std = img.std(dim=(2, 3), keepdim=True)
    img = (img - mean) / (std + eps)
    if x.shape[1] == 1:
        return img
    heat = (x[:, 1:] / HEATMAP_SCALE).clamp(0.0, 1.0)
    return torch.cat([img, heat], dim=1)


def make_views(raw: torch.Tensor, size: tuple[int, int], margin: int, train: bool,
               generator: torch.Generator | None = None, mode: str = "bilinear") -> torch.Tensor:
    """uint16-valued windows (B, C, Hp, Wp) (any dtype) -> network input (B, C, H, W) float32."""
    x = raw.float()
    boxes = sample_boxes(x.shape[0], margin, generator) if (train and margin > 0) else None
    return normalise(crop_resize(x, size, boxes, mode))
