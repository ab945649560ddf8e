"""Reading a built memory-mapped window cache (layout: :mod:`mvmammo.data.cache`)."""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from mvmammo import VIEWS
from mvmammo.data import cache_files as files
from mvmammo.data.cache_files import CacheError

from mvmammo.data.cache_spec import CACHE_VERSION, CacheSpec
from mvmammo.data.window_rows import WindowRows


class WindowCache(WindowRows):
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
