"""The window geometry every cached or stored window follows, and how one view's window is read and fitted.

Shared by the memory-mapped cache (data/cache_read.py, data/cache_build.py) and the window store (data/store/).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import pandas as pd

from mvmammo.data import exams, images
from mvmammo.data.cache_files import CacheError
from mvmammo.data.cache_fit import RESIZE_RULE, fit_window
from mvmammo.data.preprocess import WINDOW_CC, WINDOW_MLO

CACHE_VERSION = 2  # 2: fingerprints per row, aspect-keeping resize, per-view margin heights, has_cc/has_mlo
HEATMAP_SCALE = 65535.0
FULL_HEIGHT_CC, FULL_HEIGHT_MLO = WINDOW_CC[0], WINDOW_MLO[0]  # px: the paper's window heights


@dataclass(frozen=True)
class CacheSpec:
    size_cc: tuple[int, int]  # (H, W) of the training window, cached resolution
    size_mlo: tuple[int, int]
    margin_cc: int  # px at cached resolution on every side
    margin_mlo: int
    channels: int  # 1 (image) or 3 (image + benign + malignant heatmaps)
    table_sha: str = ""  # checksum of index.csv's content (labels, splits, ids)
    keep_aspect: bool = True
    resize: str = RESIZE_RULE
    version: int = CACHE_VERSION

    def size(self, view: str) -> tuple[int, int]:
        return self.size_cc if view == "cc" else self.size_mlo

    def margin(self, view: str) -> int:
        return self.margin_cc if view == "cc" else self.margin_mlo

    def stored_shape(self, view: str) -> tuple[int, int, int]:
        h, w = self.size(view)
        m = self.margin(view)
        return (self.channels, h + 2 * m, w + 2 * m)

    def geometry(self) -> dict:
        """Everything that decides the stored windows' pixels (not the index)."""
        d = asdict(self)
        d.pop("table_sha")
        return d

    def row_bytes(self, view: str) -> int:
        return int(np.prod(self.stored_shape(view))) * 2

    @classmethod
    def from_meta(cls, d: dict) -> "CacheSpec":
        known = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known})


def margin_for(size: tuple[int, int], noise_px: float, full_height: int) -> int:
    """Augmentation noise in cached pixels: noise_px is given at full resolution (a window full_height px tall)."""
    return int(round(noise_px * size[0] / full_height))


def margins(size_cc: tuple[int, int], size_mlo: tuple[int, int], noise_px: float,
            full_height: int = FULL_HEIGHT_CC) -> tuple[int, int]:
    """(CC, MLO) margins: noise_px at full resolution for each view, scaled by that view's own height.

    full_height is the CC's (DataConfig.full_height); the MLO's is in the paper's proportion (2974 / 2677)."""
    full_mlo = full_height * FULL_HEIGHT_MLO / FULL_HEIGHT_CC
    return margin_for(size_cc, noise_px, full_height), margin_for(size_mlo, noise_px, full_mlo)


def make_spec(size_cc, size_mlo, heatmaps: bool, noise_px: float = 100.0, full_height: int = FULL_HEIGHT_CC,
              keep_aspect: bool = True) -> CacheSpec:
    size_cc, size_mlo = tuple(int(s) for s in size_cc), tuple(int(s) for s in size_mlo)
    m_cc, m_mlo = margins(size_cc, size_mlo, noise_px, full_height)
    return CacheSpec(size_cc=size_cc, size_mlo=size_mlo, margin_cc=m_cc, margin_mlo=m_mlo,
                     channels=3 if heatmaps else 1, keep_aspect=bool(keep_aspect))


def read_view(df: pd.DataFrame, row: pd.Series, view: str, spec: CacheSpec) -> np.ndarray:
    """One present view's stored window, uint16 (C, H + 2m, W + 2m)."""
    path = exams.resolve_path(df, row[f"{view}_path"])
    img = images.read_image(path).astype(np.float32)
    chans = [img]
    if spec.channels == 3:
        for label in ("benign", "malignant"):
            hp = exams.resolve_path(df, row[f"{view}_heatmap_{label}"])
            hm = images.read_heatmap(hp) * HEATMAP_SCALE  # [0, 1] -> 0..65535, whatever the file's bit depth
            if hm.shape != img.shape:
                raise CacheError(f"{hp}: heatmap shape {hm.shape} differs from its image {path} {img.shape}; "
                                 "re-export the heatmap at the image's size")
            chans.append(hm)
    src = np.stack(chans)
    margin_cell = row.get(f"{view}_window_margin", 0)
    src_margin = 0 if pd.isna(margin_cell) else int(margin_cell)
    out = fit_window(src, src_margin, spec.size(view), spec.margin(view), spec.keep_aspect)
    return np.clip(np.rint(out), 0, 65535).astype(np.uint16)
