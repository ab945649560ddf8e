"""The patch grid and the averaging of patch probabilities into per-pixel heatmaps.

Grid (NYU's rule): along an axis of ``size`` px, patches start at 0, stride, 2*stride, ... while they fit, plus
one more start at ``size - patch`` when the last one is not already flush with the border; an axis no longer
than a patch has the single start 0. The grid is the product of the row starts and the column starts.

Averaging: the heatmap of class c at pixel (y, x) is the mean of p_c over the patches covering (y, x). Because
the grid is a product, the covering patches are the product of the covering rows and covering columns:
with R[i, y] = 1 when row start i covers y (ny, H) and C[j, x] likewise (nx, W),

    sum_c = R^T  P_c  C      (H, W)          count = (R^T 1)(1^T C) = rows_covering(y) * cols_covering(x)

so the whole accumulation is two small matrix products per class, instead of ~1000 scatter-adds of 256x256
blocks (:func:`average_loop`, the plain reference). The map is constant on the cells between patch borders
(every pixel of a cell is covered by the same patches), so :func:`average` evaluates the products once per cell
and repeats each value over its cell's pixels; that constancy is also what makes the maps' PNGs small.
"""
from __future__ import annotations

import numpy as np
import torch


def starts(size: int, patch: int, stride: int) -> np.ndarray:
    """Patch start offsets along one axis (int64), the last flush with the border."""
    if patch < 1 or stride < 1:
        raise ValueError(f"patch {patch} and stride {stride} must be >= 1")
    if size <= patch:
        return np.zeros(1, np.int64)
    out = list(range(0, size - patch + 1, stride))
    if out[-1] != size - patch:
        out.append(size - patch)
    return np.asarray(out, np.int64)


def grid(shape: tuple, patch: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(row starts, column starts) for an image of ``shape`` (H, W)."""
    return starts(shape[0], patch, stride), starts(shape[1], patch, stride)


def cover(first: np.ndarray | torch.Tensor, patch: int, size: int, device=None) -> torch.Tensor:
    """(n, size) float32: 1 where patch start ``first[i]`` covers pixel y (first[i] <= y < first[i] + patch)."""
    first = torch.as_tensor(np.asarray(first), device=device).view(-1, 1)
    y = torch.arange(size, device=device).view(1, -1)
    return ((y >= first) & (y < first + patch)).float()


def cells(first: np.ndarray, patch: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(start pixel, length) of the cells between consecutive patch borders along one axis.

    Every pixel of a cell is covered by the same patches, so the averaged map is constant on it.
    """
    first = np.asarray(first, np.int64)
    edges = np.unique(np.concatenate([[0, size], np.clip(first, 0, size), np.clip(first + patch, 0, size)]))
    return edges[:-1], np.diff(edges)


def cell_means(probs: torch.Tensor, rows: np.ndarray, cols: np.ndarray, patch: int, shape: tuple
               ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(C, cells_y, cells_x) mean over covering patches of ``probs`` (ny, nx, C), once per cell (the formula
    above with R, C restricted to one pixel per cell), and the cells' heights and widths (px).
    Cells no patch covers (only when the grid does not span ``shape``) are 0."""
    probs = probs.float()
    dev = probs.device
    ys, hy = cells(rows, patch, shape[0])
    xs, wx = cells(cols, patch, shape[1])
    r = cover(rows, patch, shape[0], dev)[:, torch.as_tensor(ys, device=dev)]   # (ny, cells_y)
    c = cover(cols, patch, shape[1], dev)[:, torch.as_tensor(xs, device=dev)]   # (nx, cells_x)
    sums = torch.einsum("iy,ijk,jx->kyx", r, probs, c)       # (C, cells_y, cells_x)
    count = r.sum(0)[:, None] * c.sum(0)[None, :]            # patches covering each cell
    return torch.where(count > 0, sums / count.clamp_min(1), torch.zeros_like(sums)), hy, wx


def average(probs: torch.Tensor, rows: np.ndarray, cols: np.ndarray, patch: int, shape: tuple) -> torch.Tensor:
    """(C, H, W) mean over covering patches of ``probs`` (ny, nx, C), on probs' device, float32.

    :func:`cell_means`, then each cell's value repeated over its pixels: exact, and the cost is one write of the
    (C, H, W) output. Pixels no patch covers (only when the grid does not span ``shape``) are 0.
    """
    value, hy, wx = cell_means(probs, rows, cols, patch, shape)
    dev = value.device
    value = value.repeat_interleave(torch.as_tensor(hy, device=dev), dim=1)
    return value.repeat_interleave(torch.as_tensor(wx, device=dev), dim=2)   # (C, H, W)


def average_numpy(probs: np.ndarray, rows: np.ndarray, cols: np.ndarray, patch: int, shape: tuple) -> np.ndarray:
    """:func:`average` of a host grid as a numpy array, the repetition done by numpy on the calling thread.

    Why: the heatmap command renders maps on many host threads at once; torch's CPU kernels would each start
    their own pool of intra-op threads (cores x threads in all), numpy's repeat runs on the thread it is given.
    """
    value, hy, wx = cell_means(torch.from_numpy(np.ascontiguousarray(probs)), rows, cols, patch, shape)
    return np.repeat(np.repeat(value.numpy(), hy, axis=1), wx, axis=2)


def average_loop(probs: np.ndarray, rows: np.ndarray, cols: np.ndarray, patch: int, shape: tuple) -> np.ndarray:
    """The plain reference of :func:`average`: add each patch's probabilities into its block, divide by counts."""
    n_cls = probs.shape[-1]
    sums = np.zeros((n_cls,) + tuple(shape), np.float64)
    count = np.zeros(tuple(shape), np.float64)
    for i, y in enumerate(rows):
        for j, x in enumerate(cols):
            sums[:, y:y + patch, x:x + patch] += np.asarray(probs[i, j], np.float64)[:, None, None]
            count[y:y + patch, x:x + patch] += 1
    return np.where(count > 0, sums / np.maximum(count, 1), 0.0).astype(np.float32)
