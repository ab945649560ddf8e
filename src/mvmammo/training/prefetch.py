"""Load the next batches' uint16 windows while the GPU computes the current step.

A background thread copies each batch's rows out of the cache straight into a pinned host buffer (one
memcpy per window, no float conversion on the CPU). On CUDA the consumer's thread starts the host->device
copy of the NEXT batch on a side stream (non-blocking, with an event) as it hands over the current one, and
makes its own stream wait on that event: no host synchronisation, the copy overlaps the current step, and
the device holds at most one batch ahead (host memory holds up to ``depth``).

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

    chunks: the cache rows of each batch, in order. depth: batches filled ahead of the consumer in host
    memory (>= 1). On the device at most ONE batch is ahead of the one handed over: a background thread
    fills host buffers, and the consumer's thread starts the host->device copy of batch k+1 (on a side
    stream, non-blocking) when it hands over batch k, or when it asks for k+1 if that was not filled yet.
    CUDA: depth + 1 pinned buffer sets sized for the largest chunk, reused; a set is refilled only after the
    copy that read it has finished (the worker waits on its event, in its own thread).
    Nothing here keeps a batch's tensors referenced after it was handed over (no generator locals, no queue
    entries), so they are freed as soon as the consumer drops them.
    """

    def __init__(self, cache, chunks: Iterable[np.ndarray], device: torch.device, depth: int = 2):
        self.cache, self.device = cache, device
        self.chunks = [np.asarray(c) for c in chunks]
        self.cuda = device.type == "cuda"
        depth = max(1, int(depth))
        self.ready: queue.Queue = queue.Queue()  # (rows, slot, host dict) | exception | _DONE; bounded by slots
        self.free: queue.Queue = queue.Queue()  # (slot, event of the copy that last read it | None)
        self.stop = threading.Event()
        self.labels = cache.labels()  # (N, 2) int64, small
        self.present = cache.present().astype(np.float32)  # (N, 2) [cc, mlo], 1 = view present
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        biggest = max((len(c) for c in self.chunks), default=0)
        n_slots = depth + 1 if self.cuda else depth  # CUDA: one more, its copy possibly still running
        self.buffers = [self._alloc(biggest) for _ in range(n_slots)] if (biggest and self.cuda) else []
        for slot in range(n_slots):
            self.free.put((slot, None))
        self._ahead: tuple | None = None  # (rows, device dict, event): copy started, not handed over yet
        self._done = False
        self._error: BaseException | None = None  # the worker's, raised where its batch would come
        self.thread = threading.Thread(target=self._work, name="mvmammo-prefetch", daemon=True)
        self.thread.start()

    def _alloc(self, n: int) -> dict:
        out = {key: torch.empty(shape, dtype=dtype, pin_memory=self.cuda)
               for key, (shape, dtype) in host_layout(self.cache, n).items()}
        out["labels"] = torch.empty((n, 2), dtype=torch.int64, pin_memory=self.cuda)
        out["present"] = torch.empty((n, 2), dtype=torch.float32, pin_memory=self.cuda)
        return out

    # --- background thread: cache rows -> host buffers ---
    def _work(self) -> None:
        try:
            for rows in self.chunks:
                slot = self._free_slot()
                if slot is None:
                    return
                # One expression: this frame keeps no reference to the batch once it is queued.
                self.ready.put((rows, slot, self._fill(rows, slot)))
        except BaseException as exc:  # hand the error to the consumer instead of dying silently
            self.ready.put(exc)
        finally:
            self.ready.put(_DONE)

    def _free_slot(self) -> int | None:
        """A buffer set no copy reads any more (waits for one); None once stopped."""
        while not self.stop.is_set():
            try:
                slot, event = self.free.get(timeout=0.1)
            except queue.Empty:
                continue
            if event is not None:
                event.synchronize()  # this thread waits, not the training loop
            return slot
        return None

    def _fill(self, rows: np.ndarray, slot: int) -> dict[str, torch.Tensor]:
        # On the CPU nothing copies asynchronously: fresh buffers, handed over as they are.
        buf = self.buffers[slot] if self.cuda else self._alloc(len(rows))
        host = fill_host(self.cache, rows, buf)
        host["labels"] = buf["labels"][: len(rows)].copy_(torch.from_numpy(self.labels[rows]))
        host["present"] = buf["present"][: len(rows)].copy_(torch.from_numpy(self.present[rows]))
        return host

    # --- consumer thread: host buffers -> device, one batch ahead at most ---
    def _to_device(self, host: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], object]:
        """Start the host->device copy on the side stream: (device tensors, event when done)."""
        if not self.cuda:
            return host, None
        with torch.cuda.stream(self.stream):
            dev = {key: t.to(self.device, non_blocking=True) for key, t in host.items()}
            event = torch.cuda.Event()
            event.record(self.stream)
        return dev, event

    def _take(self, block: bool) -> bool:
        """Start the device copy of the next filled batch into self._ahead. False at the end, or (not block)
        when the next batch is not filled yet."""
        if self._done:
            return False
        try:
            item = self.ready.get() if block else self.ready.get_nowait()
        except queue.Empty:
            return False
        if item is _DONE:
            self._done = True
            return False
        if isinstance(item, BaseException):  # raised once the batches before it are handed over
            self._error, self._done = item, True
            return False
        rows, slot, host = item
        del item
        dev, event = self._to_device(host)
        # CUDA: the buffer set is free once the copy's event fires; CPU: fresh buffers, the token only counts.
        self.free.put((slot, event))
        self._ahead = (rows, dev, event)
        return True

    def _hand_over(self) -> tuple[np.ndarray, dict, torch.Tensor]:
        rows, dev, event = self._ahead
        self._ahead = None
        if self.cuda:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)  # GPU-side wait: the host runs on
            for t in dev.values():
                # Allocated on the side stream, used on this one: keep the allocator from
                # handing the memory back to the side stream while this one still reads it.
                t.record_stream(current)
        labels = dev.pop("labels")
        return rows, dev, labels

    def __iter__(self) -> Iterator[tuple[np.ndarray, dict, torch.Tensor]]:
        try:
            while self._ahead is not None or self._take(block=True):
                box = [self._hand_over()]
                self._take(block=False)  # the next copy overlaps this batch's step, if it is filled
                yield box.pop()  # the list is empty while suspended: the consumer holds the only reference
            if self._error is not None:
                raise self._error
        finally:
            self.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self._ahead = None
