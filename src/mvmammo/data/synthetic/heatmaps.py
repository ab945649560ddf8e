"""Benign and malignant heatmaps imitating a patch classifier (Wu et al. 2019a) for one view.

Each channel is a probability map in [0, 1], 0 outside the breast:
  - a blob at each lesion *visible in this view* (an obscured lesion gives nothing: the heatmap only shows
    what the image shows), missed with probability ``heatmap_miss``, of random strength;
  - cross-talk: a visible lesion of the other class gives a weaker blob half of the time (patch classifiers
    confuse benign and malignant);
  - false-positive blobs (Poisson, mean ``heatmap_fp`` per channel) and a low haze over dense tissue.
Stored as 16-bit PNG, value = round(probability * 65535), probability in steps of 1/1024.
"""
from __future__ import annotations

import numpy as np

from .anatomy import ViewGeometry
from .lesions import Lesion, lesion_pixels
from .presets import ViewKnobs

CHANNELS = ("benign", "malignant")


def _add_blob(hm: np.ndarray, row: float, col: float, sigma: float, amp: float) -> None:
    """hm = 1 - (1 - hm)(1 - blob): probabilities combine like independent detections."""
    h, w = hm.shape
    ext = 3.5 * sigma + 1
    r0, r1 = max(int(row - ext), 0), min(int(row + ext) + 2, h)
    c0, c1 = max(int(col - ext), 0), min(int(col + ext) + 2, w)
    if r0 >= r1 or c0 >= c1:
        return
    dy = np.arange(r0, r1, dtype=np.float32)[:, None] - row
    dx = np.arange(c0, c1, dtype=np.float32)[None, :] - col
    blob = amp * np.exp(-0.5 * (dy * dy + dx * dx) / (sigma * sigma))
    hm[r0:r1, c0:c1] = 1 - (1 - hm[r0:r1, c0:c1]) * (1 - blob)


def render_heatmaps(lesions: list[Lesion], geo: ViewGeometry, knobs: ViewKnobs, mask: np.ndarray,
                    gland: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(2, H, W) float32: channel 0 benign, channel 1 malignant."""
    h, w = geo.height, geo.width
    out = np.zeros((2, h, w), np.float32)
    # A smooth haze over dense tissue (no per-pixel noise: a patch classifier's output is smooth).
    out[:] = (0.03 + 0.02 * rng.uniform(size=(2, 1, 1))) * gland
    for les in lesions:
        if not les.visible(geo.view):
            continue
        row, col, r_px = lesion_pixels(les, geo, knobs)
        sigma = max(1.0, 0.8 * r_px)
        own = CHANNELS.index(les.cls)
        if rng.uniform() >= knobs.heatmap_miss:
            _add_blob(out[own], row, col, sigma, rng.uniform(0.45, 0.95))
        if rng.uniform() < 0.5:
            _add_blob(out[1 - own], row, col, sigma, rng.uniform(0.05, 0.3))
    ys, xs = np.nonzero(mask)
    for c in range(2):
        for _ in range(rng.poisson(knobs.heatmap_fp)):
            if ys.size == 0:
                break
            k = rng.integers(ys.size)
            sigma = max(1.0, rng.uniform(0.02, 0.04) * h)
            _add_blob(out[c], float(ys[k]), float(xs[k]), sigma, rng.uniform(0.15, 0.7))
    out = np.clip(out, 0.0, 1.0)
    out[:, ~mask] = 0.0
    return out


def to_png16(prob: np.ndarray) -> np.ndarray:
    """Probability -> uint16 (value = p * 65535), p first rounded to 1/1024 (a patch classifier's output
    needs no more; the files compress twice as well)."""
    q = np.rint(np.clip(prob, 0, 1) * 1024) / 1024
    return np.rint(q * 65535).astype(np.uint16)
