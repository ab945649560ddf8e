"""What a window store folder holds, and how one record is encoded.

  meta.json        {"format": "mvmammo-store", "version", "spec": CacheSpec geometry, "heat_factor", "codec",
                    "complete", "taken_ns"}
  index.parquet    one row per breast: ids, split, labels (-1 unknown), has_cc/has_mlo, key/content (what the
                   row was made from, see data/cache_key.py), and per view: shard, offset, image_nbytes,
                   heat_nbytes, crc (crc32 of the record's stored bytes)
  parts/           while building: one Parquet file per committed chunk (merged into index.parquet at the end)
  shards/NNNNN.bin records appended with plain writes; a record = compressed image bytes + compressed heatmap bytes

Image channel: uint16 (H + 2m, W + 2m), lossless: blosc2 with a byte shuffle (the high bytes of 12-bit values are
nearly constant, so grouping them lets the entropy coder remove them) and zstd level 1. Heatmap channels: float16
(2, ceil(Hp / f), ceil(Wp / f)) block means, f = heat_factor: the patch classifier's heatmaps vary on the scale of
its ~60-70 px patch stride at full resolution, so an 8x coarser grid keeps them; they are upsampled (bilinear) on
the device. f is chosen per resolution so that the grid is never finer than needed nor coarser than 8 full-res px.
Why blosc2 and these settings: docs/performance.md (measured in benchmarks/store.py).
"""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np

FORMAT = "mvmammo-store"
VERSION = 1
CODEC = {"library": "blosc2", "codec": "zstd", "clevel": 1, "filter": "shuffle"}
FULL_RES_HEIGHT = 2677  # px: the paper's CC window height (full resolution)
HEAT_CELL_FULL_RES = 8  # px at full resolution per stored heatmap cell


def heat_factor_for(height: int, full_height: int = FULL_RES_HEIGHT) -> int:
    """Downsampling factor of the heatmap channels for windows ``height`` px tall: 8 at full resolution, 1 when
    the windows are already 8x smaller than full resolution or more (nothing to gain, and exact at demo scale)."""
    return max(1, int(HEAT_CELL_FULL_RES * height / full_height))


def is_store(root: str | Path) -> bool:
    path = Path(root) / "meta.json"
    try:
        return json.loads(path.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


_GIL_RELEASED = False


def _blosc2():
    """The codec module, set up for our reader threads: python-blosc2 keeps the GIL during (de)compression
    unless told otherwise (set_releasegil defaults to False), which serialised every reader thread (measured on
    an H100 host: 310 windows/s with 1, 2 or 16 threads); each call is also single-threaded (nthreads=1), since the
    parallelism is one record per reader thread first; blosc2's own threads inside a record only use the cores
that the records of one fill leave idle (loader.fill). Measured on the H100 host, full-size batches of 16:
data path 125 -> 262 breasts/s after releasing the GIL."""
    global _GIL_RELEASED
    import blosc2

    if not _GIL_RELEASED:
        blosc2.set_releasegil(True)
        _GIL_RELEASED = True
    return blosc2


def compress_image(img: np.ndarray) -> bytes:
    """uint16 (H, W) -> bytes (lossless)."""
    b2 = _blosc2()
    img = np.ascontiguousarray(img, dtype=np.uint16)
    return b2.compress2(img, typesize=2, clevel=CODEC["clevel"], codec=b2.Codec.ZSTD,
                        filters=[b2.Filter.SHUFFLE], nthreads=1)


def heat_shape(hp: int, wp: int, factor: int) -> tuple[int, int]:
    return math.ceil(hp / factor), math.ceil(wp / factor)


def downsample_heat(heat: np.ndarray, factor: int) -> np.ndarray:
    """float (2, Hp, Wp) in [0, 1] -> float16 (2, ceil(Hp/f), ceil(Wp/f)) block means (edge blocks: their
    pixels' mean)."""
    c, hp, wp = heat.shape
    if factor == 1:
        return heat.astype(np.float16)
    h, w = heat_shape(hp, wp, factor)
    sums = np.zeros((c, h, w), dtype=np.float64)
    counts = np.zeros((h, w), dtype=np.float64)
    ys, xs = np.arange(hp) // factor, np.arange(wp) // factor
    np.add.at(counts, (ys[:, None], xs[None, :]), 1.0)
    for k in range(c):
        np.add.at(sums[k], (ys[:, None], xs[None, :]), heat[k])
    return (sums / counts).astype(np.float16)


def compress_heat(heat16: np.ndarray) -> bytes:
    b2 = _blosc2()
    heat16 = np.ascontiguousarray(heat16, dtype=np.float16)
    return b2.compress2(heat16, typesize=2, clevel=CODEC["clevel"], codec=b2.Codec.ZSTD,
                        filters=[b2.Filter.SHUFFLE], nthreads=1)


def decompress_into(blob: bytes | memoryview, out: np.ndarray, nthreads: int = 1) -> None:
    """Decode a record part straight into ``out`` (a C-contiguous array of the right size, e.g. a slice of a
    pinned batch buffer); with the GIL released (see _blosc2), reader threads decode in parallel."""
    _blosc2().decompress2(blob, dst=out, nthreads=max(1, int(nthreads)))


def crc(*parts: bytes) -> int:
    value = 0
    for p in parts:
        value = zlib.crc32(p, value)
    return value
