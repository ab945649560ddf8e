"""Decoding a batch of store records into (pinned) host buffers with reader threads.

blosc2 releases the GIL while it decodes and os.pread while it reads, so N threads decode N windows at once;
each thread writes straight into its window's slice of the batch buffer (no intermediate copy). The training
input path (training/prefetch.py) runs this in its background thread into two alternating pinned buffer sets,
so the decode of batch k+1 overlaps the step of batch k.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_POOL: ThreadPoolExecutor | None = None


def pool(threads: int | None = None) -> ThreadPoolExecutor:
    """The shared reader threads (default: one per core, at most 16)."""
    global _POOL
    want = threads or min(16, os.cpu_count() or 1)
    if _POOL is None or _POOL._max_workers != want:  # noqa: SLF001 (resize on request)
        if _POOL is not None:
            _POOL.shutdown(wait=False)
        _POOL = ThreadPoolExecutor(max_workers=want, thread_name_prefix="mvmammo-store")
    return _POOL


def fill(store, view: str, rows: np.ndarray, image_out: np.ndarray, heat_out: np.ndarray | None,
         threads: int | None = None) -> None:
    """image_out[k, 0] = row k's image (uint16 (B, 1, Hp, Wp) buffer), heat_out[k] = its heatmaps (float16
    (B, 2, h, w)) for k < len(rows)."""
    rows = np.asarray(rows)

    def one(k: int) -> None:
        store.read_into(int(rows[k]), view, image_out[k, 0], None if heat_out is None else heat_out[k])

    if len(rows) <= 1 or (threads or 2) == 1:
        for k in range(len(rows)):
            one(k)
    else:
        list(pool(threads).map(one, range(len(rows))))
