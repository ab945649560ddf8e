"""One image as the patch classifier sees it: the breast's bounding box, standardised (shared by patch
extraction and heatmap inference, so training patches and inference patches come from the same transform).

NYU's patch stage works on the cropped image standardised per image (mean 0, std 1). Here the crop box is the
breast mask's bounding box (:func:`mvmammo.data.preprocess.crop_and_flip`, no flip: patches keep the source
orientation, and training flips them at random) plus ``crop_margin`` px; the mean and std are taken over that
box. When no breast is found (a blank or unusual image) the whole image is used. A box smaller than the patch
is padded (after standardisation) with the box's minimum, i.e. background, up to one patch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mvmammo.data.preprocess import PreprocessError, crop_and_flip


@dataclass(frozen=True)
class Prepared:
    image: np.ndarray   # float32 (h, w): the standardised crop, at least patch x patch (padded bottom/right)
    box: tuple          # y0, x0, y1, x1 of the crop in the source image (end exclusive)
    shape: tuple        # the source image's (H, W)


def crop_box(img: np.ndarray, crop_margin: int = 20) -> tuple:
    try:
        box, _ = crop_and_flip(img, crop_margin)
    except PreprocessError:
        box = (0, 0, img.shape[0], img.shape[1])
    return box


def prepare(img: np.ndarray, patch: int, crop_margin: int = 20, box: tuple | None = None) -> Prepared:
    """The standardised crop of a uint16 (H, W) image (see the module docstring)."""
    box = crop_box(img, crop_margin) if box is None else tuple(int(b) for b in box)
    y0, x0, y1, x1 = box
    crop = img[y0:y1, x0:x1].astype(np.float32)
    std = float(crop.std())
    crop = (crop - float(crop.mean())) / (std if std > 0 else 1.0)
    h, w = crop.shape
    if h < patch or w < patch:
        padded = np.full((max(h, patch), max(w, patch)), crop.min() if crop.size else 0.0, np.float32)
        padded[:h, :w] = crop
        crop = padded
    return Prepared(np.ascontiguousarray(crop), box, tuple(img.shape))
