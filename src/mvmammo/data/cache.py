"""The window cache: every breast's CC and MLO windows decoded once into uint16 arrays, memory-mapped to read.

Layout of a cache folder:
  meta.json            the geometry (:class:`CacheSpec`: sizes, margins, channels, keep_aspect, resize rule,
                       format version), the index checksum and when the file fingerprints were taken
  index.csv            row -> breast_id, patient_id, exam_id, side, split, benign, malignant (-1 = unknown),
                       has_cc, has_mlo, key / content (what the row's windows were made from, see cache_key.py)
  cc.npy, mlo.npy      uint16 (N, C, H + 2m, W + 2m): channel 0 the image (raw detector units, 12-16 bit),
                       channels 1-2 the benign / malignant heatmaps scaled to 0..65535; an absent view is zeros
  done.npy             bool (N,): rows written so far (a killed build resumes where it stopped)
  checksums.npy        uint32 (N, 2): crc32 of each stored cc / mlo window (verify with `verify()`)

The margin m (pixels at the cached resolution) is the room that augmentation's random window position and
size noise needs: ``noise_px`` (100 px) at full resolution, scaled by each view's own window height (CC 2677,
MLO 2974 px: the paper's windows). It holds the source image where the source has context, else zeros.

When is a cache rebuilt? :func:`build_cache` compares the geometry and each row's fingerprint (its files'
path, size and mtime; see :mod:`mvmammo.data.cache_key`) with what the folder holds, and prints one line
saying why it rebuilds: a new geometry or a changed row count rebuilds all rows in ``.building/`` next to
the old files (which stay readable until the new set is complete; rows whose inputs did not change are
copied, not decoded again); changed rows with the same geometry and row count are re-decoded in place;
changed labels or splits only rewrite index.csv.
"""
from __future__ import annotations

import errno
import os
import shutil
import sys
import zlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from mvmammo import VIEWS
from mvmammo.data import cache_files as files
from mvmammo.data import exams, images
from mvmammo.data.cache_files import CacheError
from mvmammo.data.cache_fit import RESIZE_RULE, fit_window
from mvmammo.data.preprocess import WINDOW_CC, WINDOW_MLO

__all__ = ["CacheError", "CacheSpec", "WindowCache", "build_cache", "margin_for", "margins", "HEATMAP_SCALE"]

CACHE_VERSION = 2  # 2: fingerprints per row, aspect-keeping resize, per-view margin heights, has_cc/has_mlo
HEATMAP_SCALE = 65535.0
FULL_HEIGHT_CC, FULL_HEIGHT_MLO = WINDOW_CC[0], WINDOW_MLO[0]  # px: the paper's window heights
STAGING = ".building"
CHECKPOINT_ROWS = 256  # progress (done.npy, checksums) is saved every this many rows
DEFAULT_FLAGS = {"heatmaps": "data.heatmaps=false", "out": "data.cache_dir"}


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


def _read_view(df: pd.DataFrame, row: pd.Series, view: str, spec: CacheSpec) -> np.ndarray:
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


class WindowCache:
    """Read side of a built cache: memory-mapped arrays plus the index table. Every file is checked first:
    a truncated or corrupt one is a one-line :class:`CacheError` naming it."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta = files.read_meta(self.root)
        try:
            self.spec = CacheSpec.from_meta(meta["spec"])
            if self.spec.channels not in (1, 3) or self.spec.version > CACHE_VERSION:
                raise ValueError(f"channels {self.spec.channels}, version {self.spec.version}")
        except (TypeError, ValueError, KeyError) as exc:
            raise files.corrupt(self.root / "meta.json", self.root, f"bad spec: {exc}") from None
        self.index = files.read_index(self.root)
        n = len(self.index)
        done = files.read_small_npy(self.root / "done.npy", self.root, (n,), bool)
        if not done.all():
            raise CacheError(f"{self.root}: cache incomplete ({int(done.sum())}/{n} rows); run the same "
                             f"`mvmammo cache TABLE --out {self.root}` (or training) again to finish it")
        self.checksums = files.read_small_npy(self.root / "checksums.npy", self.root, (n, 2), np.uint32)
        self.arrays = {v: files.open_array(self.root / f"{v}.npy", self.root, (n,) + self.spec.stored_shape(v))
                       for v in VIEWS}
        cols = [c for c in ("has_cc", "has_mlo") if c in self.index.columns]
        self._present = (self.index[["has_cc", "has_mlo"]].to_numpy(dtype=bool) if len(cols) == 2
                         else np.ones((n, 2), dtype=bool))  # caches before one-view breasts: both present
        self.usable = np.ones(n, dtype=bool)  # rows offered by rows(); see exclude()

    def __len__(self) -> int:
        return len(self.index)

    def exclude(self, mask: np.ndarray) -> None:
        """Leave the rows where mask is true out of :meth:`rows` (e.g. one-view breasts, data.missing_view=drop)."""
        self.usable &= ~np.asarray(mask, dtype=bool)

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero((self.index["split"].to_numpy() == split) & self.usable)

    def labels(self, rows: np.ndarray | None = None) -> np.ndarray:
        """(N, 2) int64 labels (benign, malignant) as stored: 0/1, or -1 where unknown (predict-only tables)."""
        lab = self.index[["benign", "malignant"]].to_numpy(dtype=np.int64)
        return lab if rows is None else lab[rows]

    def present(self, rows: np.ndarray | None = None) -> np.ndarray:
        """(B, 2) bool [cc, mlo]: the view exists (an absent view is stored as zeros)."""
        return self._present if rows is None else self._present[np.asarray(rows)]

    def load(self, rows: np.ndarray, view: str) -> np.ndarray:
        """uint16 (B, C, H + 2m, W + 2m) for the given rows (copied out of the memory map)."""
        rows = np.asarray(rows)
        order = np.argsort(rows, kind="stable")  # sorted reads are sequential on disk
        out = np.empty((len(rows),) + self.arrays[view].shape[1:], dtype=np.uint16)
        out[order] = self.arrays[view][rows[order]]
        return out

    def verify(self) -> list[str]:
        """Rows whose stored bytes no longer match their checksum."""
        bad = []
        for i in range(len(self)):
            for j, v in enumerate(VIEWS):
                if zlib.crc32(np.ascontiguousarray(self.arrays[v][i]).tobytes()) != self.checksums[i, j]:
                    bad.append(f"row {i} ({self.index.breast_id[i]}), {v}: checksum mismatch")
        return bad


# --- building ---

def build_cache(df: pd.DataFrame, root: str | Path, size_cc: tuple[int, int], size_mlo: tuple[int, int],
                heatmaps: bool, noise_px: float = 100.0, full_height: int = FULL_HEIGHT_CC,
                progress: bool = True, *, keep_aspect: bool = True, flags: dict | None = None) -> WindowCache:
    """Decode every row's windows into ``root``; resumes an interrupted build; reuses what is still valid.

    df: a validated exam table (:func:`mvmammo.data.exams.load_valid`); rows with an empty cc_path or
    mlo_path are one-view breasts (their absent view is stored as zeros). flags: how the caller's user
    names the options in messages ({"heatmaps": "--no-heatmaps", "out": "--out"} for `mvmammo cache`).
    """
    from mvmammo.data import cache_build

    flags = {**DEFAULT_FLAGS, **(flags or {})}
    spec = make_spec(size_cc, size_mlo, heatmaps, noise_px, full_height, keep_aspect)
    return cache_build.build(df, Path(root), spec, progress, flags)


@contextmanager
def build_lock(root: Path):
    """Hold ``root/.cache.lock`` (blocking) while building: two processes never write one cache at once.
    Where the lock cannot be created (a read-only folder) the build goes on without it."""
    try:
        import fcntl
        fd = os.open(root / ".cache.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except (ImportError, OSError):
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def make_root(root: Path, flags: dict) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CacheError(f"{root}: exists and is not a folder; choose another cache folder ({flags['out']})") \
            from None
    except OSError as exc:
        if exc.errno in files.DISK_FULL:
            raise files.disk_full(root, 1 << 20, str(root), option=flags["out"]) from None
        raise files.cannot_write(root, exc, flags["out"]) from None
    if not os.access(root, os.W_OK) and not (root / "meta.json").exists():
        raise files.cannot_write(root, OSError(errno.EACCES, "Permission denied"), flags["out"])


def note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
