"""Which grid patches are constant (every pixel equal), found without cutting a single patch.

A patch classifier sees nothing but its patch, so two patches with the same pixels give the same output; the
common case is a patch of pure background (the crop box's corners beyond the breast, which preprocessing leaves
at one value). :func:`mvmammo.heatmaps.infer.grid_probs` computes one representative per distinct constant value
and copies its probabilities to the others: exact by construction.

How: a patch is constant iff no two horizontally or vertically adjacent pixels inside it differ. With
dx[y, x] = [img[y, x + 1] != img[y, x]] (h, w - 1) and dy[y, x] = [img[y + 1, x] != img[y, x]] (h - 1, w), the
patch at (y, x) is constant iff

    sum of dx over rows y .. y+P-1, columns x .. x+P-2  ==  0   and
    sum of dy over rows y .. y+P-2, columns x .. x+P-1  ==  0,

and each box sum is four reads of a summed-area table (integer cumsums: exact). Cost: O(h w) once per image,
against the O(patches P^2) a per-patch min/max would read.
"""
from __future__ import annotations

import numpy as np
import torch


def _integral(a: torch.Tensor) -> torch.Tensor:
    """(h + 1, w + 1) int64 summed-area table of (h, w): S[i, j] = a[:i, :j].sum()."""
    s = torch.zeros(a.shape[0] + 1, a.shape[1] + 1, dtype=torch.int64, device=a.device)
    s[1:, 1:] = a.to(torch.int64).cumsum(0).cumsum(1)
    return s


def _box(s: torch.Tensor, y: torch.Tensor, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Sums over the boxes [y, y + h) x [x, x + w) (y (ny, 1), x (1, nx)) of the table ``s``: (ny, nx)."""
    return s[y + h, x + w] - s[y, x + w] - s[y + h, x] + s[y, x]


def constant_patches(image: torch.Tensor, rows: np.ndarray, cols: np.ndarray,
                     patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(constant (ny, nx) bool, value (ny, nx) float32) of the grid patches of an (h, w) image (on its device).

    ``value`` is each patch's top-left pixel, i.e. its one value where ``constant`` is true. The image must be at
    least patch x patch (as :func:`mvmammo.patches.image.prepare` makes it).
    """
    dev = image.device
    y = torch.as_tensor(np.asarray(rows), device=dev).view(-1, 1)
    x = torch.as_tensor(np.asarray(cols), device=dev).view(1, -1)
    sx = _integral(image[:, 1:] != image[:, :-1])     # (h + 1, w) from dx (h, w - 1)
    sy = _integral(image[1:, :] != image[:-1, :])     # (h, w + 1) from dy (h - 1, w)
    changes = _box(sx, y, x, patch, patch - 1) + _box(sy, y, x, patch - 1, patch)
    return changes == 0, image[y, x].float()
