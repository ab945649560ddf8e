"""The reference preprocessing: resample, breast mask, flip, best centre, fixed-size windows.

Per image (uint16 (H, W)):
0. spacing (optional, ``Settings.spacing``): the image (and its heatmaps) is resampled to that many mm per
   pixel first (:mod:`mvmammo.data.spacing`); everything below is in the resampled frame.
1. breast mask (:mod:`mvmammo.data.breast_mask`): per-image background threshold, border bands, markers and
   label patches removed, the breast's component with its holes filled. Everything outside it is zeroed in
   the window (image and heatmaps alike). Too small a breast (< ``min_breast_area`` of the image) is an error.
   Crop box = the mask's bounding box (in source pixels) plus ``crop_margin``.
2. flip: the crop is mirrored when the chest wall is on the right (decided on the mask), so every breast
   has its chest wall on the LEFT and extends to the right (the synthetic cohort's orientation).
3. best centre (our orientation): horizontally, a breast narrower than the window keeps its chest wall
   at the window's left edge; a wider one has the window pinned to the nipple-side (right) edge.
   Vertically, CC windows sit where they hold the most breast tissue (max sliding sum of tissue per
   row). MLO windows are anchored at the bottom of the breast (window bottom = crop bottom); an MLO
   breast wider than the window gets the horizontal position holding the most tissue in those rows
   (pinning it to the nipple side would often leave the empty lower-right corner).
4. window: (H + 2 m, W + 2 m) pixels around that centre, m = the augmentation margin; pixels outside the
   crop are zero (padding, also when the image is smaller than the window).
Heatmaps follow the image's geometry exactly (resized to the image first if their shape differs).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from mvmammo.data.breast_mask import WORK_SIDE, BreastMask, PreprocessError, breast_mask  # noqa: F401 (API)

WINDOW_CC = (2677, 1942)   # (H, W) px, SPEC section 2
WINDOW_MLO = (2974, 1748)
MIN_BREAST_AREA = 0.01     # breast pixels / image pixels below which an image is dropped (a few bright pixels)


@dataclass(frozen=True)
class Geometry:
    """Where a window comes from. Boxes / centres in source-image pixels, (y, x) (the resampled image's
    pixels when ``Settings.spacing`` resamples)."""
    crop_box: tuple      # y0, x0, y1, x1 (end exclusive) in the source image
    flipped: bool        # the crop is mirrored left-right before the window is cut
    top_left: tuple      # (y, x) of the window (without margin) in the cropped, flipped frame
    window: tuple        # (H, W) without margin
    margin: int          # px added on every side
    keep: np.ndarray | None = field(default=None, compare=False, repr=False)  # bool (H, W): the breast
    breast: BreastMask | None = field(default=None, compare=False, repr=False)

    @property
    def center(self) -> tuple:
        """Window centre (y, x) in source-image pixels."""
        y0, x0, y1, x1 = self.crop_box
        cy = y0 + self.top_left[0] + self.window[0] / 2
        cxc = self.top_left[1] + self.window[1] / 2
        cx = x1 - cxc if self.flipped else x0 + cxc
        return int(round(cy)), int(round(cx))


def crop_and_flip(img: np.ndarray, crop_margin: int = 20, background="auto", bm: BreastMask | None = None,
                  keep: np.ndarray | None = None) -> tuple[tuple, bool]:
    """(crop box y0 x0 y1 x1 in source px, whether to flip) from the breast mask (``keep``: its full-resolution
    version, when already computed)."""
    bm = bm if bm is not None else breast_mask(img, background)
    keep = keep if keep is not None else bm.full(img)
    ys, xs = np.nonzero(keep.any(axis=1))[0], np.nonzero(keep.any(axis=0))[0]
    h, w = img.shape
    y0, y1 = max(0, ys[0] - crop_margin), min(h, ys[-1] + 1 + crop_margin)
    x0, x1 = max(0, xs[0] - crop_margin), min(w, xs[-1] + 1 + crop_margin)
    return (int(y0), int(x0), int(y1), int(x1)), bm.chest_wall == "R"


def oriented_crop(arr: np.ndarray, box: tuple, flipped: bool) -> np.ndarray:
    y0, x0, y1, x1 = box
    out = arr[y0:y1, x0:x1]
    return out[:, ::-1] if flipped else out


def _best_start(counts: np.ndarray, size: int) -> int:
    """Start of the length-``size`` run of ``counts`` with the largest sum (first one on ties)."""
    sums = np.convolve(counts.astype(np.int64), np.ones(size, dtype=np.int64), mode="valid")
    return int(np.argmax(sums))


def best_top_left(crop: np.ndarray, view: str, window: tuple, tissue: np.ndarray | None = None) -> tuple[int, int]:
    """(y, x) of the window's top-left corner in the oriented crop; see the module doc (step 3).

    ``tissue``: bool mask of the breast in the crop (default: crop > 0). Negative values mean the window
    starts before the crop (that side is zero-padded).
    """
    h, w = crop.shape
    wh, ww = window
    tissue = crop > 0 if tissue is None else tissue
    if view == "mlo":
        top = h - wh  # bottom-anchored: the window's last row is the breast's last row
        if w <= ww:
            return top, 0
        rows = tissue[max(0, top):]  # choose x on the rows the window covers
        return top, _best_start(rows.sum(axis=0), ww)
    left = 0 if w <= ww else w - ww  # chest wall at the left edge, or pinned to the nipple side
    if h <= wh:
        return (h - wh) // 2, left
    return _best_start(tissue[:, max(0, left):].sum(axis=1), wh), left


def cut_window(arr: np.ndarray, top_left: tuple, window: tuple, margin: int) -> np.ndarray:
    """arr[y - m : y + H + m, x - m : x + W + m], zero outside arr; shape (H + 2m, W + 2m)."""
    H, W = window[0] + 2 * margin, window[1] + 2 * margin
    y, x = top_left[0] - margin, top_left[1] - margin
    out = np.zeros((H, W), dtype=arr.dtype)
    sy0, sx0 = max(0, y), max(0, x)
    sy1, sx1 = min(arr.shape[0], y + H), min(arr.shape[1], x + W)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y:sy1 - y, sx0 - x:sx1 - x] = arr[sy0:sy1, sx0:sx1]
    return out


def plan(img: np.ndarray, view: str, window: tuple, margin: int, crop_margin: int = 20,
         background="auto", min_breast_area: float = MIN_BREAST_AREA) -> Geometry:
    """The window of ``img`` (uint16 (H, W)); raises PreprocessError when no breast (large enough) is found."""
    bm = breast_mask(img, background)
    if bm.area_frac < min_breast_area:
        raise PreprocessError(f"breast too small: {bm.area_frac:.2%} of the image is above the background "
                              f"(threshold {bm.threshold:g}), below the minimum breast area {min_breast_area:.2%} "
                              "(blank or nearly blank image? lower --min-breast-area if it is real)")
    keep = bm.full(img)
    box, flipped = crop_and_flip(img, crop_margin, background, bm, keep)
    tl = best_top_left(oriented_crop(img, box, flipped), view, window, oriented_crop(keep, box, flipped))
    return Geometry(box, flipped, tl, tuple(window), int(margin), keep, bm)


def apply(arr: np.ndarray, geo: Geometry) -> np.ndarray:
    """Cut the window of ``geo`` out of an image or a same-shaped heatmap; zero outside the breast."""
    crop = oriented_crop(arr, geo.crop_box, geo.flipped)
    if geo.keep is not None:
        crop = np.where(oriented_crop(geo.keep, geo.crop_box, geo.flipped), crop, 0).astype(arr.dtype, copy=False)
    return cut_window(crop, geo.top_left, geo.window, geo.margin)


def breast_in_window(geo: Geometry) -> tuple[float, float]:
    """(breast share of the window without margin, share of the breast outside it)."""
    if geo.keep is None:
        return float("nan"), float("nan")
    inside = int(cut_window(oriented_crop(geo.keep, geo.crop_box, geo.flipped), geo.top_left, geo.window, 0).sum())
    total = int(geo.keep.sum())
    return inside / float(geo.window[0] * geo.window[1]), (1.0 - inside / total) if total else 0.0


def match_shape(heatmap: np.ndarray, shape: tuple) -> np.ndarray:
    """A heatmap resized (bilinear) to the image's shape when it differs."""
    if heatmap.shape == tuple(shape):
        return heatmap
    zoom = (shape[0] / heatmap.shape[0], shape[1] / heatmap.shape[1])
    out = ndimage.zoom(heatmap, zoom, order=1)
    fixed = np.zeros(shape, dtype=heatmap.dtype)  # zoom can be off by a pixel from rounding
    fixed[:min(shape[0], out.shape[0]), :min(shape[1], out.shape[1])] = out[:shape[0], :shape[1]]
    return fixed


# ---- the whole table: Settings here, the per-breast and per-table work in preprocess_table.py ----------------

@dataclass(frozen=True)
class Settings:
    window_cc: tuple = WINDOW_CC
    window_mlo: tuple = WINDOW_MLO
    margin: int = 100          # augmentation margin on every side, px
    crop_margin: int = 20      # added around the breast's bounding box, px
    voi_lut: bool = False      # apply a DICOM's VOI LUT / window when reading
    background: int | str = "auto"            # "auto" (per-image threshold) or a fixed intensity (<= is background)
    min_breast_area: float = MIN_BREAST_AREA  # share of the image; a smaller breast drops the breast
    spacing: float | None = None              # mm per pixel to resample every image to; None = as stored
    source_spacing: float | None = None       # mm per pixel where neither DICOM nor the table gives one
    allow_missing_view: bool = False          # one-view breasts: window the view that is there

