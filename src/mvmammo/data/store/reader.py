"""Reading a window store: the index in memory, records read with os.pread and decoded into caller buffers.

The reading interface is the memory-mapped cache's (spec, index, rows, labels, present, load, exclude, verify),
so evaluation and analyses take either. Training's fast path uses :meth:`WindowStore.read_into` (through
:mod:`mvmammo.data.store.loader`), which decodes the image channel straight into a pinned batch buffer and
leaves the heatmaps at their stored resolution for the device to upsample.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from mvmammo import VIEWS
from mvmammo.data import cache_files as files
from mvmammo.data.cache_spec import HEATMAP_SCALE, CacheSpec
from mvmammo.data.cache_files import CacheError
from mvmammo.data.store import format as fmt
from mvmammo.data.window_rows import WindowRows


class WindowStore(WindowRows):
    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta = files.read_meta(self.root)
        if meta.get("format") != fmt.FORMAT:
            raise CacheError(f"{self.root}: not a window store (meta.json format {meta.get('format')!r})")
        if not meta.get("complete"):
            raise CacheError(f"{self.root}: window store incomplete; run the same `mvmammo cache` (or training) "
                             "command again to finish it")
        self.meta = meta
        self.spec = CacheSpec.from_meta(meta["spec"])
        self.heat_factor = int(meta["heat_factor"])
        path = self.root / "index.parquet"
        try:
            self.index = pd.read_parquet(path)
        except Exception as exc:
            raise files.corrupt(path, self.root, f"{type(exc).__name__}") from None
        for c in ("breast_id", "patient_id", "exam_id"):
            if c in self.index:
                self.index[c] = self.index[c].astype(str)
        self._present = self.index[["has_cc", "has_mlo"]].to_numpy(dtype=bool)
        self.usable = np.ones(len(self.index), dtype=bool)
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()
        self._loc = {v: self.index[[f"{v}_shard", f"{v}_offset", f"{v}_image_nbytes", f"{v}_heat_nbytes"]]
                     .to_numpy(dtype=np.int64) for v in VIEWS}

    def heat_shape(self, view: str) -> tuple[int, int]:
        _, hp, wp = self.spec.stored_shape(view)
        return fmt.heat_shape(hp, wp, self.heat_factor)

    # --- records ---
    def _fd(self, shard: int) -> int:
        fd = self._fds.get(shard)
        if fd is None:
            with self._lock:
                fd = self._fds.get(shard)
                if fd is None:
                    path = self.root / "shards" / f"{shard:05d}.bin"
                    try:
                        fd = os.open(path, os.O_RDONLY)
                    except OSError as exc:
                        raise files.corrupt(path, self.root, exc.strerror or "cannot open") from None
                    self._fds[shard] = fd
        return fd

    def _record(self, row: int, view: str) -> tuple[bytes, bytes]:
        shard, off, n_img, n_heat = self._loc[view][row]
        if n_img == 0:
            return b"", b""
        data = os.pread(self._fd(int(shard)), int(n_img + n_heat), int(off))
        if len(data) != n_img + n_heat:
            raise files.corrupt(self.root / "shards" / f"{int(shard):05d}.bin", self.root,
                                f"record of row {row} ({view}) cut short")
        return data[:n_img], data[n_img:]

    def read_into(self, row: int, view: str, image_out: np.ndarray, heat_out: np.ndarray | None,
                  nthreads: int = 1) -> None:
        """Decode one row's view: image into ``image_out`` (uint16/int16 (Hp, Wp) view of a buffer), heatmaps into
        ``heat_out`` (float16 (2, h, w)) when given; an absent view is zeros."""
        image, heat = self._record(row, view)
        if not image:
            image_out[...] = 0
            if heat_out is not None:
                heat_out[...] = 0
            return
        fmt.decompress_into(image, image_out, nthreads)  # nthreads: the codec's threads for this one record
        if heat_out is not None and heat:
            fmt.decompress_into(heat, heat_out)

    def load_parts(self, rows: np.ndarray, view: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(uint16 (B, 1, Hp, Wp), float16 (B, 2, h, w) or None): the stored form, decoded on this thread."""
        rows = np.asarray(rows)
        _, hp, wp = self.spec.stored_shape(view)
        img = np.empty((len(rows), 1, hp, wp), dtype=np.uint16)
        heat = np.empty((len(rows), 2, *self.heat_shape(view)), dtype=np.float16) if self.spec.channels == 3 else None
        for k, r in enumerate(rows):
            self.read_into(int(r), view, img[k, 0], None if heat is None else heat[k])
        return img, heat

    def load(self, rows: np.ndarray, view: str) -> np.ndarray:
        """uint16 (B, C, Hp, Wp) like the memory-mapped cache: heatmaps upsampled (bilinear) and scaled to 0..65535."""
        img, heat = self.load_parts(rows, view)
        if heat is None:
            return img
        import torch

        up = upsample_heat(torch.from_numpy(heat.astype(np.float32)), img.shape[-2:]).numpy()
        hm = np.clip(np.rint(up * HEATMAP_SCALE), 0, 65535).astype(np.uint16)
        return np.concatenate([img, hm], axis=1)

    def verify(self) -> list[str]:
        """Rows whose stored bytes no longer match their checksum or do not decode."""
        bad = []
        for i in range(len(self)):
            for v in VIEWS:
                try:
                    image, heat = self._record(i, v)
                except CacheError as exc:
                    bad.append(f"row {i} ({self.index.breast_id.iloc[i]}), {v}: {exc}")
                    continue
                if fmt.crc(image, heat) != int(self.index[f"{v}_crc"].iloc[i]):
                    bad.append(f"row {i} ({self.index.breast_id.iloc[i]}), {v}: checksum mismatch")
        return bad

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def upsample_heat(heat, size):
    """float (B, 2, h, w) block means -> (B, 2, H, W) bilinear (torch tensors; runs on the device in training)."""
    import torch.nn.functional as F

    if tuple(heat.shape[-2:]) == tuple(size):
        return heat
    # Upsample by the exact integer factor (block centres land where the blocks were), then cut the edge
    # blocks' overhang: the last block row/column may cover fewer than f pixels.
    f = -(-int(size[0]) // heat.shape[-2])
    up = F.interpolate(heat, scale_factor=f, mode="bilinear", align_corners=False)
    return up[..., :size[0], :size[1]]
