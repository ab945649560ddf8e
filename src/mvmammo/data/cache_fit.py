"""Fitting a source window into the cache's stored window: one affine map per axis, separable resampling.

A source window (C, Hs, Ws) carries ``src_margin`` px of real context on every side (0 when the table's
images are whole windows); the window proper is src[:, M:Hs-M, M:Ws-M], win_h x win_w px. The stored window
is (C, H + 2m, W + 2m): the training window (H, W) plus the augmentation margin m on every side.

Scale (stored px per source px):
- keep_aspect (default): one factor s = min(H / win_h, W / win_w) for both axes, so the breast is never
  stretched. The scaled window's top-left corner sits at the training window's top-left corner: the chest
  wall stays on the left edge (preprocessing puts it there) and the top stays where preprocessing placed
  it; the training window's leftover width (right) or height (bottom) shows what lies beyond the source
  window: its context where the source has some, else zeros.
- stretch: H / win_h and W / win_w separately (the old rule; `mvmammo cache --stretch`, data.keep_aspect=false).

Every stored pixel is sampled at its mapped position on the source, seen as an image on an infinite zero
background. The filter is the linear (triangle) kernel, widened by 1/s when shrinking (antialiasing, as PIL's
and torch's antialiased bilinear), with weights normalised over the whole lattice, zeros included: an
identity map (s = 1, integer offset) copies pixels exactly, a 2x reduction averages with weights
1/8, 3/8, 3/8, 1/8. The resampling is a product of two sparse matrices, exact at any offset (no rounding of
the footprint to whole source pixels).
"""
from __future__ import annotations

import numpy as np
from scipy import sparse

RESIZE_RULE = "triangle-aa-v1"  # recorded in the cache key: a change of the filter rebuilds caches


def axis_weights(n_out: int, n_src: int, scale: float, shift: float) -> sparse.csr_matrix:
    """(n_out, n_src) float32 weights: output pixel i samples the source at edge coordinate
    (i + 0.5) / scale + shift (pixel k of the source covers [k, k + 1))."""
    radius = max(1.0, 1.0 / scale)  # filter half-width in source px
    u = (np.arange(n_out) + 0.5) / scale + shift  # (n_out,) source positions
    taps = int(np.ceil(2 * radius)) + 2
    k = np.floor(u - radius - 0.5).astype(np.int64)[:, None] + np.arange(taps)  # (n_out, taps)
    w = np.clip(1.0 - np.abs(k + 0.5 - u[:, None]) / radius, 0.0, None)
    w /= w.sum(axis=1, keepdims=True)  # normalised over the lattice: outside pixels count as zeros
    keep = (w > 0) & (k >= 0) & (k < n_src)
    rows = np.broadcast_to(np.arange(n_out)[:, None], k.shape)
    return sparse.csr_matrix((w[keep].astype(np.float32), (rows[keep], k[keep])), shape=(n_out, n_src))


def scales(win: tuple[int, int], size: tuple[int, int], keep_aspect: bool) -> tuple[float, float]:
    """(sy, sx) stored px per source px for a source window win (h, w) fitted to size (H, W)."""
    sy, sx = size[0] / win[0], size[1] / win[1]
    if keep_aspect:
        sy = sx = min(sy, sx)
    return sy, sx


def fit_window(src: np.ndarray, src_margin: int, size: tuple[int, int], margin: int,
               keep_aspect: bool = True) -> np.ndarray:
    """src (C, Hs, Ws) float32 -> (C, H + 2m, W + 2m) float32 (see the module docstring)."""
    c, hs, ws = src.shape
    h, w = size
    win = (hs - 2 * src_margin, ws - 2 * src_margin)
    if min(win) <= 0:
        raise ValueError(f"source window {hs}x{ws} with a {src_margin}-px margin has no pixels")
    sy, sx = scales(win, size, keep_aspect)
    # Stored edge coordinate y maps to source edge coordinate (y - m) / sy + M.
    out = np.empty((c, h + 2 * margin, w + 2 * margin), dtype=np.float32)
    for ch in range(c):
        rows = _resample(src[ch], h + 2 * margin, sy, src_margin - margin / sy, axis=0)  # (H + 2m, Ws)
        out[ch] = _resample(rows, w + 2 * margin, sx, src_margin - margin / sx, axis=1)  # (H + 2m, W + 2m)
    return out


def _resample(a: np.ndarray, n_out: int, scale: float, shift: float, axis: int) -> np.ndarray:
    """Resample one axis of a 2-D array to n_out samples. Scale 1 at a whole-pixel shift is a plain shifted
    copy (the full-resolution case: the same values as the matrix product, several times faster)."""
    n_src = a.shape[axis]
    if scale == 1.0 and float(shift).is_integer():
        shape = (n_out, a.shape[1]) if axis == 0 else (a.shape[0], n_out)
        out = np.zeros(shape, dtype=np.float32)
        k0 = int(shift)  # output i takes source i + k0
        lo, hi = max(0, -k0), min(n_out, n_src - k0)
        if hi > lo:
            if axis == 0:
                out[lo:hi] = a[lo + k0:hi + k0]
            else:
                out[:, lo:hi] = a[:, lo + k0:hi + k0]
        return out
    weights = axis_weights(n_out, n_src, scale, shift)
    res = weights @ a if axis == 0 else (weights @ a.T).T
    return np.ascontiguousarray(res, dtype=np.float32)
