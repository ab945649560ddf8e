"""Reading one image file into a 2-D uint16 array.

This is the only place that decodes image files; everything downstream sees uint16 arrays.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


class ImageReadError(ValueError):
    """An image file could not be read; the message names the file and what to do."""


def read_png(path: str | Path) -> np.ndarray:
    """Read an 8- or 16-bit grayscale PNG/JPEG as uint16 (H, W)."""
    from PIL import Image

    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: file not found; check the path column of the exam table")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            arr = np.asarray(im)
    except Exception as exc:  # PIL raises many types for corrupt files
        raise ImageReadError(f"{path}: cannot decode image ({exc}); re-export the file") from exc
    if arr.ndim == 3:
        raise ImageReadError(f"{path}: colour image (mode {mode}); mammograms must be single-channel grayscale")
    if arr.dtype == np.uint8 or arr.dtype == np.uint16:
        return arr.astype(np.uint16, copy=False)
    if arr.dtype in (np.int32, np.int16) and arr.min() >= 0 and arr.max() < 65536:
        return arr.astype(np.uint16)
    raise ImageReadError(f"{path}: unsupported pixel type {arr.dtype} (mode {mode}); expected 8- or 16-bit grayscale")


def read_image(path: str | Path) -> np.ndarray:
    """Read any supported mammogram file as uint16 (H, W)."""
    return read_png(path)


def write_png16(path: str | Path, arr: np.ndarray) -> None:
    """Write a 2-D uint16 array as a 16-bit grayscale PNG."""
    from PIL import Image

    arr = np.ascontiguousarray(arr, dtype=np.uint16)
    Image.fromarray(arr).save(path, optimize=False, compress_level=1)
