"""Pixel spacing: where an image's comes from, and resampling an image (or heatmap) to another.

Spacing is (row, column) in mm per pixel. The source of an image's spacing, first found wins:
DICOM PixelSpacing, then ImagerPixelSpacing (:func:`mvmammo.data.dicom.read_pixel_spacing`); the table
column ``cc_pixel_spacing`` / ``mlo_pixel_spacing``, then ``pixel_spacing``; the ``--source-spacing`` default.
"""
from __future__ import annotations

import math

import numpy as np

from mvmammo.data.breast_mask import PreprocessError


def parse_spacing(value) -> tuple[float, float] | None:
    """'0.07', '0.07 0.07', '0.07\\0.07', '0.07,0.07' or a number -> (row, col) mm; None for empty/NaN."""
    if value is None:
        return None
    if isinstance(value, (int, float, np.floating, np.integer)):
        if math.isnan(float(value)):
            return None
        parts = [float(value)]
    else:
        text = str(value).strip().replace("\\", " ").replace(",", " ")
        if not text or text.lower() == "nan":
            return None
        try:
            parts = [float(p) for p in text.split()]
        except ValueError:
            raise PreprocessError(f"pixel spacing {value!r} is not a number in mm (e.g. 0.07 or '0.07 0.07')") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(math.isfinite(p) and p > 0 for p in parts):
        raise PreprocessError(f"pixel spacing {value!r}: expected one or two positive numbers in mm")
    return float(parts[0]), float(parts[1])


def source_spacing(path, row_values: dict, view: str, default: float | None) -> tuple[tuple | None, str]:
    """((row, col) mm or None, where it came from: 'dicom', 'table', 'default' or 'none')."""
    from mvmammo.data.dicom import is_dicom, read_pixel_spacing

    if path is not None and is_dicom(path):
        sp = read_pixel_spacing(path)
        if sp is not None:
            return sp, "dicom"
    for col in (f"{view}_pixel_spacing", "pixel_spacing"):
        sp = parse_spacing(row_values.get(col))
        if sp is not None:
            return sp, "table"
    if default is not None:
        return parse_spacing(default), "default"
    return None, "none"


def scale_factors(src: tuple, target: float) -> tuple[float, float]:
    """(row, col) zoom from the source spacing to ``target`` mm: 0.05 mm -> 0.1 mm halves the size."""
    return src[0] / target, src[1] / target


def resample(arr: np.ndarray, zoom: tuple, heatmap: bool = False) -> np.ndarray:
    """``arr`` (H, W) resized by ``zoom`` (row, col): round(H * zy) x round(W * zx).

    Images: Lanczos (PIL, anti-aliased when shrinking), rounded and clipped to uint16. Heatmaps: bilinear,
    clipped to [0, 1], float32.
    """
    from PIL import Image

    if zoom == (1.0, 1.0):
        return arr
    h, w = arr.shape
    size = (max(1, int(round(w * zoom[1]))), max(1, int(round(h * zoom[0]))))  # PIL: (W, H)
    im = Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32), mode="F")
    filt = Image.Resampling.BILINEAR if heatmap else Image.Resampling.LANCZOS
    out = np.asarray(im.resize(size, filt), dtype=np.float32)
    if heatmap:
        return np.clip(out, 0.0, 1.0)
    return np.clip(np.rint(out), 0, 65535).astype(np.uint16)
