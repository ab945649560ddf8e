"""Reading one image file into a 2-D uint16 array (and heatmaps into float32 in [0, 1]).

This is the only place that decodes image files; everything downstream sees uint16 arrays.
Formats: DICOM (see :mod:`mvmammo.data.dicom`), 8/16-bit grayscale PNG, JPEG, TIFF; heatmaps as NYU-style
HDF5 (dataset ``image``) or PNG (16-bit = probability x 65535, 8-bit = x 255).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")


class ImageReadError(ValueError):
    """An image file could not be read; the message names the file and what to do."""


def read_png(path: str | Path) -> np.ndarray:
    """Read an 8- or 16-bit grayscale PNG/JPEG/TIFF as uint16 (H, W); 8-bit values stay 0..255."""
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
    if arr.ndim == 3 or mode in ("P", "RGB", "RGBA", "LA", "CMYK", "YCbCr"):
        raise ImageReadError(f"{path}: colour image (mode {mode}); mammograms must be single-channel grayscale "
                             "(8- or 16-bit)")
    if mode == "1":
        raise ImageReadError(f"{path}: 1-bit image; mammograms must be 8- or 16-bit grayscale")
    if arr.dtype == np.uint8 or arr.dtype == np.uint16:
        return arr.astype(np.uint16, copy=False)
    if arr.dtype.kind in "iu" and arr.size and arr.min() >= 0 and arr.max() < 65536:
        return arr.astype(np.uint16)
    raise ImageReadError(f"{path}: unsupported pixel type {arr.dtype} (mode {mode}); expected 8- or 16-bit grayscale")


def read_image(path: str | Path, voi_lut: bool = False) -> np.ndarray:
    """Read any supported mammogram file as uint16 (H, W). ``voi_lut`` applies a DICOM's VOI LUT/window."""
    from mvmammo.data.dicom import DicomError, is_dicom, read_dicom

    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: file not found; check the path column of the exam table")
    if is_dicom(path):
        try:
            return read_dicom(path, voi_lut=voi_lut)
        except DicomError as exc:
            raise ImageReadError(str(exc)) from exc
    if path.suffix.lower() in HDF5_SUFFIXES:
        raise ImageReadError(f"{path}: HDF5 files are heatmaps, not images; use a heatmap column")
    return read_png(path)


def read_hdf5_array(path: str | Path) -> np.ndarray:
    """The 2-D array of an NYU-format HDF5 file: dataset 'image', else the file's only dataset."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            names = [k for k in f.keys() if isinstance(f[k], h5py.Dataset)]
            name = "image" if "image" in names else (names[0] if len(names) == 1 else None)
            if name is None:
                raise ImageReadError(f"{path}: HDF5 without a dataset 'image' (datasets: {names})")
            arr = np.asarray(f[name])
    except ImageReadError:
        raise
    except Exception as exc:
        raise ImageReadError(f"{path}: cannot read HDF5 ({type(exc).__name__}: {exc})") from exc
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise ImageReadError(f"{path}: HDF5 dataset has shape {arr.shape}; expected a 2-D map")
    return arr


def read_heatmap(path: str | Path) -> np.ndarray:
    """A heatmap as float32 (H, W) in [0, 1]: HDF5 as stored, PNG scaled by its bit depth."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: heatmap file not found")
    if path.suffix.lower() in HDF5_SUFFIXES:
        arr = read_hdf5_array(path).astype(np.float32)
    else:
        from PIL import Image

        with Image.open(path) as im:
            scale = 255.0 if im.mode in ("L", "P") else 65535.0
        arr = read_png(path).astype(np.float32) / scale
    if not np.isfinite(arr).all():
        raise ImageReadError(f"{path}: heatmap holds NaN or infinite values")
    return np.clip(arr, 0.0, 1.0)


def write_png16(path, arr: np.ndarray) -> None:
    """Write a 2-D uint16 array as a 16-bit grayscale PNG (``path``: a path or a binary file object)."""
    from PIL import Image

    arr = np.ascontiguousarray(arr, dtype=np.uint16)
    Image.fromarray(arr).save(path, format="PNG", optimize=False, compress_level=1)


def write_heatmap_png(path: str | Path, arr: np.ndarray) -> None:
    """Write a [0, 1] heatmap as a 16-bit PNG holding round(p x 65535); :func:`read_heatmap` undoes it."""
    write_png16(path, np.rint(np.clip(arr, 0.0, 1.0) * 65535.0))
