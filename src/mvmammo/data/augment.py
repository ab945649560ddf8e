"""Batched window augmentation as tensor ops (CPU or GPU), as the reference code's random crop.

Input: cached windows (B, C, H + 2m, W + 2m) with m px of context on each side (m = 100 px at full
resolution, scaled to the cached size). Training draws, per sample:
  - size noise: each of the four borders moves independently by e ~ U[-m, m] px (positive = outwards), so
    the box height H + e_top + e_bottom and width W + e_left + e_right vary independently (the aspect ratio
    changes too);
  - position noise: the whole box then shifts by dy ~ U[max(e_top, 0) - m, m - max(e_bottom, 0)] (dx
    likewise): up to m px either way, less on a side whose border moved out, so the box always stays within
    the m px of cached context (the reference pads beyond the image instead; we have only m px of it).
The box is resized back to (H, W) with one affine_grid + grid_sample (bicubic, as the reference's resize;
samples beyond the cached window, which only bicubic's outer taps can reach, repeat its edge pixel). Then
the image channel is standardised per window (mean 0, std 1) and the heatmap channels are mapped to [0, 1].

Boxes are (B, 4) float (y0, y1, x0, x1): the box's edges relative to the centre window's edges in cached px,
so the box covers rows [m + y0, m + H + y1) and columns [m + x0, m + W + x1) of the cached window; the
centre window is (0, 0, 0, 0) and any drawn box has -m <= y0, x0 and y1, x1 <= m.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mvmammo.data.cache_spec import HEATMAP_SCALE

RESIZE_MODE = "bicubic"  # the reference code's resampling (SPEC section 2); "bilinear" is cheaper


def _between(lo: torch.Tensor, hi: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    return lo + u * (hi - lo)


def sample_boxes(batch: int, margin: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, 4) float (y0, y1, x0, x1) in cached px; the draw is the module doc's, from ``generator`` only."""
    u = torch.rand(batch, 6, generator=generator)
    e = (2 * u[:, :4] - 1) * margin  # (B, 4) outward moves of the top, bottom, left, right borders
    e_top, e_bottom, e_left, e_right = e.unbind(1)
    dy = _between(e_top.clamp(min=0) - margin, margin - e_bottom.clamp(min=0), u[:, 4])
    dx = _between(e_left.clamp(min=0) - margin, margin - e_right.clamp(min=0), u[:, 5])
    return torch.stack([dy - e_top, dy + e_bottom, dx - e_left, dx + e_right], dim=1)


def crop_resize(x: torch.Tensor, size: tuple[int, int], boxes: torch.Tensor | None, mode: str = RESIZE_MODE
                ) -> torch.Tensor:
    """Cut per-sample boxes from x (B, C, Hp, Wp) and resize to size -> (B, C, H, W).

    boxes: (B, 4) (y0, y1, x0, x1) as in the module doc, or None = the deterministic centre window (a plain
    slice, no resampling). Output pixel k of a box [a, b) samples the input at a + (k + 1/2)(b - a)/H - 1/2
    (pixel centres; align_corners=False), so a box of the output's size is an exact (shifted) slice.
    """
    b, c, hp, wp = x.shape
    h, w = size
    if boxes is None:
        my, mx = (hp - h) // 2, (wp - w) // 2
        return x[:, :, my:my + h, mx:mx + w]
    grid = box_grid(boxes.to(device=x.device, dtype=torch.float32), (hp, wp), size)
    return F.grid_sample(x, grid.to(x.dtype), mode=mode, padding_mode="border", align_corners=False)


def box_grid(boxes: torch.Tensor, window: tuple[int, int], size: tuple[int, int],
             scale: tuple[float, float] = (1.0, 1.0)) -> torch.Tensor:
    """Sampling grid (B, H, W, 2) of grid_sample (align_corners=False) for float32 boxes (B, 4) cut from cached
    windows of shape ``window`` (Hp, Wp) and resized to ``size`` (H, W). scale (sy, sx): read the same points
    from an input whose normalised coordinates are g' = (g + 1) s - 1 (a coarser grid of the window), folded
    into the affine map so that no second pass over the grid is needed."""
    hp, wp = window
    h, w = size
    b = boxes.shape[0]
    y0, y1, x0, x1 = boxes.unbind(1)
    box_h, box_w = h + y1 - y0, w + x1 - x0
    my, mx = (hp - h) // 2, (wp - w) // 2  # the centre window's first row / column, as crop_resize's slice
    theta = torch.zeros(b, 2, 3, device=boxes.device, dtype=torch.float32)
    # affine_grid maps output coords v in [-1, 1] to input coords u = theta v + t (align_corners=False);
    # the box's pixel edges [lo, hi) give scale (hi - lo) / Wp and offset (lo + hi) / Wp - 1.
    theta[:, 0, 0] = box_w / wp
    theta[:, 1, 1] = box_h / hp
    theta[:, 0, 2] = (2 * mx + w + x0 + x1) / wp - 1
    theta[:, 1, 2] = (2 * my + h + y0 + y1) / hp - 1
    if scale != (1.0, 1.0):
        s = torch.tensor([[scale[1]], [scale[0]]], device=boxes.device, dtype=torch.float32)  # rows: x, y
        theta = theta * s
        theta[:, :, 2] += s[:, 0] - 1
    return F.affine_grid(theta, [b, 1, h, w], align_corners=False)


def crop_resize_coarse(heat: torch.Tensor, window: tuple[int, int], size: tuple[int, int],
                       boxes: torch.Tensor | None) -> torch.Tensor:
    """The heatmap channels straight from the window store's coarse grid: (B, C, h, w) block means of f x f px
    of a (Hp, Wp) cached window -> (B, C, H, W), bilinear, at the points where :func:`crop_resize` samples the
    full-resolution window.

    Why: upsampling the grid to full resolution first and then resampling it (bicubic) writes and reads two
    full-size float32 channels per window, most of the augmentation's memory traffic; reading the small grid
    directly does not. The values: a block's centre (i + 1/2) f - 1/2 in px is grid coordinate i, so px p is
    grid coordinate (p + 1/2) / f - 1/2, i.e. grid_sample's normalised coordinate scales by Hp / (f h). For the
    centre window (boxes None) this is exactly the bilinear upsampling of :func:`upsample_heat
    <mvmammo.data.store.reader.upsample_heat>` cut to the window; for a drawn box it is bilinear where the
    two-step path is bicubic of the bilinear upsampling (the difference is measured in tests and
    benchmarks/augment_speed.py). f = ceil(Hp / h), the store's rule.
    """
    hp, wp = window
    b, _, gh, gw = heat.shape
    f = -(-int(hp) // gh)
    if boxes is None:
        boxes = torch.zeros(b, 4)
    grid = box_grid(boxes.to(device=heat.device, dtype=torch.float32), (hp, wp), size,
                    scale=(hp / (f * gh), wp / (f * gw)))
    return F.grid_sample(heat.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


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
               generator: torch.Generator | None = None, mode: str = RESIZE_MODE) -> torch.Tensor:
    """uint16-valued windows (B, C, Hp, Wp) (any dtype) -> network input (B, C, H, W) float32."""
    x = raw.float()
    boxes = sample_boxes(x.shape[0], margin, generator) if (train and margin > 0) else None
    return normalise(crop_resize(x, size, boxes, mode))
