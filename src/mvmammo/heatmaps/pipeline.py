"""Three overlapped stages for a stream of images: load on worker threads, infer on the calling thread, write
on worker threads.

Why: for one full-size image the host work around the network (PNG decode ~40 ms, breast box and
standardisation ~80 ms, rendering the two maps from the patch grid ~20 ms, two 16-bit PNGs ~50 ms: ~0.2 core-s,
measured on this project's CPU) is longer than the network on a GPU (dense mode ~0.55 TFLOPs per image).
Run one after the other, the host caps the rate near 5 images/s whatever the card; spread over the host's cores
and overlapped with the device, it stops being the limit. The device work stays on the calling thread, in
order, so one CUDA stream is fed without locks.

Threads, not processes: the decoders and encoders (Pillow, zlib) and numpy's array work release the GIL, and the
stages hand each other arrays of ~20 MB that processes would have to copy. Bounds: at most ``ahead`` loaded
items wait for the device (each a float32 crop, ~20 MB at full size) and at most ``behind`` results wait for a
writer, so memory stays flat however long the table is.

Failure: the first exception of any stage is raised in the calling thread; loads and writes not yet started are
cancelled, running ones are waited for (writes are atomic, so nothing is left half-written).
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

J = TypeVar("J")


def run(jobs: Iterable[J], load: Callable[[J], object], infer: Callable[[J, object], object],
        write: Callable[[J, object], object], workers: int, on_done: Callable[[J, object], None] | None = None,
        ahead: int | None = None, behind: int | None = None) -> int:
    """write(job, infer(job, load(job))) for every job; ``on_done(job, write's result)`` on the calling thread
    as each write finishes (in job order). ``workers`` = 0: everything on the calling thread, one job at a
    time (the plain reference). Returns the number of jobs done."""
    jobs = list(jobs)
    done_cb = on_done or (lambda job, res: None)
    if workers <= 0:
        for job in jobs:
            done_cb(job, write(job, infer(job, load(job))))
        return len(jobs)
    ahead = max(1, workers + 1 if ahead is None else ahead)
    behind = max(1, 2 * workers if behind is None else behind)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="heatmaps")
    loads: deque[tuple[J, Future]] = deque()
    writes: deque[tuple[J, Future]] = deque()
    todo = iter(jobs)
    end = object()

    def fill() -> None:
        while len(loads) < ahead:
            job = next(todo, end)
            if job is end:
                return
            loads.append((job, pool.submit(load, job)))

    def finish(limit: int) -> None:
        while len(writes) > limit:
            job, fut = writes.popleft()
            done_cb(job, fut.result())

    try:
        fill()
        while loads:
            job, fut = loads.popleft()
            item = fut.result()
            fill()                       # the next loads start before the device work of this one
            result = infer(job, item)
            del item
            writes.append((job, pool.submit(write, job, result)))
            finish(behind)
        finish(0)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return len(jobs)
