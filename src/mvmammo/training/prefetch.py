"""Load the next batches' uint16 windows while the GPU computes the current step.

A background thread copies each batch's rows out of the memory-mapped cache straight into a pinned host
buffer (one memcpy per window, no float conversion on the CPU), then, on CUDA, starts the host->device copy
on a side stream and records an event. The consumer (the training loop's thread) makes its stream wait on
that event: no host synchronisation, and the copy overlaps the previous step's kernels.

The bytes travel as int16 (the uint16 bits reinterpreted: half the bytes of float32) and are turned back
into values 0..65535 on the device (:func:`mvmammo.training.inputs.raw_to_float`).

Only windows travel here; random boxes are drawn by the consumer, in order, so the augmentation stream is
the same as the plain path's (a prefetched run reproduces an unprefetched one exactly).
"""
from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator

import numpy as np
import torch

from mvmammo import VIEWS

_DONE = object()


def _pool() -> ThreadPoolExecutor:
    """Reader threads shared by all loaders: one core copies ~5 GB/s, a full-resolution breast is ~75 MB."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="mvmammo-read")
    return _POOL


_POOL: ThreadPoolExecutor | None = None


def _read_row(array: np.ndarray, row: int, dst: np.ndarray) -> None:
    """dst[...] = array[row]; from a memory-mapped .npy file by pread straight into dst (no page faults on
    the map, the GIL released during the read), else by a plain copy."""
    name, offset = getattr(array, "filename", None), getattr(array, "offset", None)
    if name and offset is not None and array.flags.c_contiguous and hasattr(os, "preadv") and dst.flags.c_contiguous:
        fd = os.open(name, os.O_RDONLY)
        try:
            got = os.preadv(fd, [memoryview(dst).cast("B")], offset + int(row) * dst.nbytes)
        finally:
            os.close(fd)
        if got == dst.nbytes:
            return
    dst[...] = array[row]


def fill_pinned(array: np.ndarray, rows: np.ndarray, out: torch.Tensor) -> torch.Tensor:
    """Copy array[rows] (uint16, (N, C, H, W) memmap) into out[:len(rows)] (int16, same trailing shape),
    one window per reader thread."""
    dst = out[: len(rows)].numpy().view(np.uint16)
    if len(rows) == 1 or dst[0].nbytes < (1 << 20):  # small windows: threads cost more than they save
        for i in range(len(rows)):
            _read_row(array, rows[i], dst[i])
    else:
        list(_pool().map(lambda i: _read_row(array, rows[i], dst[i]), range(len(rows))))
    return out[: len(rows)]


def host_layout(cache, n: int) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """The host buffers one batch of n rows needs: {key: (shape, dtype)}.

    Memory-mapped cache: {view: (n, C, Hp, Wp) int16}. Window store: {view: (n, 1, Hp, Wp) int16} for the image
    and, with heatmaps, {view_heat: (n, 2, h, w) float16} at the store's reduced resolution (upsampled on the
    device by :func:`mvmammo.training.inputs.windows`)."""
    out = {}
    for view in VIEWS:
        if hasattr(cache, "read_into"):  # the window store
            out[view] = ((n, 1) + tuple(cache.spec.stored_shape(view)[1:]), torch.int16)
            if cache.spec.channels == 3:
                out[f"{view}_heat"] = ((n, 2) + tuple(cache.heat_shape(view)), torch.float16)
        else:
            out[view] = ((n,) + tuple(cache.arrays[view].shape[1:]), torch.int16)
    return out


def fill_host(cache, rows: np.ndarray, buf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fill the first len(rows) entries of each buffer of :func:`host_layout` with those rows' windows."""
    n = len(rows)
    if not hasattr(cache, "read_into"):
        return {v: fill_pinned(cache.arrays[v], rows, buf[v]) for v in VIEWS}
    from mvmammo.data.store.loader import fill

    out = {}
    for v in VIEWS:
        img = buf[v][:n]
        heat = buf.get(f"{v}_heat")
        heat = None if heat is None else heat[:n]
        fill(cache, v, rows, img.numpy().view(np.uint16), None if heat is None else heat.numpy())
        out[v] = img
        if heat is not None:
            out[f"{v}_heat"] = heat
    return out


class Prefetcher:
    """Iterate ``(rows, {view: int16 tensor on device (B, C, Hp, Wp), "present": float32 (B, 2)}, labels (B, 2)
    int64 on device)``.

    chunks: the cache rows of each batch, in order. depth: batches ready ahead of the consumer (>= 1).
    Pinned buffers are sized for the largest chunk and reused: each is refilled only after the copy that
    read it has finished (the worker waits on its event, in its own thread).
    """

    def __init__(self, cache, chunks: Iterable[np.ndarray], device: torch.device, depth: int = 2):
        self.cache, self.device = cache, device
        self.chunks = [np.asarray(c) for c in chunks]
        self.cuda = device.type == "cuda"
        self.ready: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.stop = threading.Event()
        self.labels = cache.labels()  # (N, 2) int64, small
        self.present = cache.present().astype(np.float32)  # (N, 2) [cc, mlo], 1 = view present
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        biggest = max((len(c) for c in self.chunks), default=0)
        # CUDA: two pinned buffer sets, one being filled while the other's copy may still run.
        self.buffers = [self._alloc(biggest) for _ in range(2)] if (biggest and self.cuda) else []
        self.thread = threading.Thread(target=self._work, name="mvmammo-prefetch", daemon=True)
        self.thread.start()

    def _alloc(self, n: int) -> dict:
        out = {key: torch.empty(shape, dtype=dtype, pin_memory=self.cuda)
               for key, (shape, dtype) in host_layout(self.cache, n).items()}
        out["labels"] = torch.empty((n, 2), dtype=torch.int64, pin_memory=self.cuda)
        out["present"] = torch.empty((n, 2), dtype=torch.float32, pin_memory=self.cuda)
        return out

    def _work(self) -> None:
        try:
            pending = [None, None]  # the event of the last copy out of each buffer set
            for k, rows in enumerate(self.chunks):
                if self.stop.is_set():
                    return
                slot = k % 2
                if pending[slot] is not None:
                    pending[slot].synchronize()  # this thread waits, not the training loop
                # On the CPU nothing copies asynchronously: fresh buffers, handed over as they are.
                buf = self.buffers[slot] if self.cuda else self._alloc(len(rows))
                host = fill_host(self.cache, rows, buf)
                lab = buf["labels"][: len(rows)]
                lab.copy_(torch.from_numpy(self.labels[rows]))
                host["labels"] = lab
                pres = buf["present"][: len(rows)]
                pres.copy_(torch.from_numpy(self.present[rows]))
                host["present"] = pres
                if self.cuda:
                    with torch.cuda.stream(self.stream):
                        dev = {key: t.to(self.device, non_blocking=True) for key, t in host.items()}
                        event = torch.cuda.Event()
                        event.record(self.stream)
                    pending[slot] = event
                else:
                    dev, event = host, None
                self._put((rows, dev, event))
        except BaseException as exc:  # hand the error to the consumer instead of dying silently
            self._put(exc)
        finally:
            self._put(_DONE)

    def _put(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.ready.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[tuple[np.ndarray, dict, torch.Tensor]]:
        try:
            while True:
                item = self.ready.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                rows, dev, event = item
                if self.cuda:
                    current = torch.cuda.current_stream(self.device)
                    current.wait_event(event)  # GPU-side wait: the host runs on
                    for t in dev.values():
                        # Allocated on the side stream, used on this one: keep the allocator from
                        # handing the memory back to the side stream while this one still reads it.
                        t.record_stream(current)
                labels = dev.pop("labels")
                yield rows, dev, labels
        finally:
            self.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
