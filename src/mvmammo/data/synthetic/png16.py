"""A fast, deterministic writer of 16-bit grayscale PNGs (the cohort writes six per breast).

Same file format as :func:`mvmammo.data.images.write_png16` (which any reader in the project decodes), about
twice as fast: every row uses PNG filter 2 ("Up": difference to the row above, which suits smooth images and
heatmaps), done in numpy, then one zlib stream at level 1. Identical arrays give identical bytes.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def encode_png16(arr: np.ndarray, level: int = 1) -> bytes:
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {arr.shape}")
    h, w = arr.shape
    raw = np.ascontiguousarray(arr, dtype=">u2").view(np.uint8).reshape(h, 2 * w)
    rows = np.empty((h, 2 * w + 1), np.uint8)
    rows[:, 0] = 2  # filter type Up for every row (row 0 is differenced against zeros, i.e. unchanged)
    rows[0, 1:] = raw[0]
    np.subtract(raw[1:], raw[:-1], out=rows[1:, 1:])  # uint8 arithmetic wraps mod 256, as PNG specifies
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0)  # 16-bit, grayscale, deflate, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), level))
            + _chunk(b"IEND", b""))


def write_png16_fast(path: str | Path, arr: np.ndarray) -> None:
    Path(path).write_bytes(encode_png16(arr))
