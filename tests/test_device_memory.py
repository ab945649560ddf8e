"""What stays alive beside the model's activations during a step: the raw source windows of a batch are
freed once its model input is made (with and without prefetch), and the prefetcher moves at most one batch
ahead of the consumer to the device."""
import sys
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from synthetic_cache import write_cache  # noqa: E402

from mvmammo.training import prefetch  # noqa: E402
from mvmammo.training.inputs import BatchMaker  # noqa: E402

CHUNKS = [np.array([3, 1, 7]), np.array([0, 9, 2]), np.array([5, 4, 8]), np.array([6])]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_cache(tmp_path_factory.mktemp("mem"), breasts=10, size="small", seed=4)


class WatchedMaker(BatchMaker):
    """Records a weak reference to the storage of every raw window tensor assemble() reads, per batch.
    A storage's weak reference dies when no tensor (view or base buffer) uses that memory any more."""

    def __post_init__(self):
        super().__post_init__()
        self.watch: list[list[weakref.ref]] = []

    def assemble(self, rows, raw, labels, train, generator=None, n_draw=None, part=None):
        self.watch.append([weakref.ref(raw[v].untyped_storage()) for v in ("cc", "mlo")])
        return super().assemble(rows, raw, labels, train, generator, n_draw, part)


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_raw_windows_are_freed_when_the_consumer_receives_the_batch(cache, depth):
    maker = WatchedMaker(cache, torch.device("cpu"), prefetch=depth)
    gen = torch.Generator().manual_seed(0)
    seen = 0
    for k, batch in enumerate(maker.batches(CHUNKS, train=True, generator=gen)):
        # no gc.collect(): reference counting alone must free them, as the CUDA caching allocator needs
        assert len(maker.watch) == k + 1
        assert [r() for r in maker.watch[k]] == [None, None], f"batch {k}: raw windows still referenced"
        assert batch["cc"].shape[0] == len(CHUNKS[k])
        seen += 1
    assert seen == len(CHUNKS)


def test_watch_detects_a_held_reference(cache):
    """The probe itself: a raw tensor kept by someone keeps its storage's weak reference alive."""
    maker = WatchedMaker(cache, torch.device("cpu"))
    raw, labels = maker.load(CHUNKS[0])
    maker.assemble(CHUNKS[0], raw, labels, train=True, generator=torch.Generator().manual_seed(0))
    assert all(r() is not None for r in maker.watch[0])
    del raw
    assert all(r() is None for r in maker.watch[0])


class CountingPrefetcher(prefetch.Prefetcher):
    """Counts the batches moved to the device (_to_device) against those handed to the consumer."""

    def __init__(self, *a, **k):
        self.moved = 0
        super().__init__(*a, **k)

    def _to_device(self, host):
        self.moved += 1
        return super()._to_device(host)


@pytest.mark.parametrize("depth", [1, 3])
def test_prefetcher_moves_at_most_one_batch_ahead_to_the_device(cache, depth):
    chunks = [np.array([i]) for i in range(8)]
    p = CountingPrefetcher(cache, chunks, torch.device("cpu"), depth=depth)
    got = []
    for k, (rows, dev, labels) in enumerate(p):
        if k == 2:  # let the worker fill everything it may (host memory), then look again
            time.sleep(0.2)
        assert p.moved - (k + 1) in (0, 1), (k, p.moved)
        assert p.ready.qsize() <= depth + 1  # filled in host memory (+ the end marker)
        got.append(int(rows[0]))
    assert got == list(range(8)) and p.moved == 8


def test_prefetcher_host_side_fills_ahead_but_is_bounded(cache):
    """depth batches filled ahead in host memory while the consumer has not asked for more."""
    chunks = [np.array([i]) for i in range(8)]
    p = CountingPrefetcher(cache, chunks, torch.device("cpu"), depth=2)
    it = iter(p)
    next(it)
    deadline = time.time() + 5
    while p.ready.qsize() < 2 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # had the bound failed, the worker would fill more in this time
    # batch 0 handed over, batch 1 moved ahead (or still queued if it was not filled in time), and the queue
    # holds exactly depth filled batches: the worker waits for a free slot
    assert p.moved in (1, 2) and p.ready.qsize() == 2
    it.close()
    assert not p.thread.is_alive()


def test_prefetcher_hands_a_worker_error_to_the_consumer_in_order(cache):
    chunks = [np.array([0]), np.array([1]), np.array([99])]  # row 99 does not exist: the worker fails there
    p = prefetch.Prefetcher(cache, chunks, torch.device("cpu"), depth=2)
    got = []
    with pytest.raises(IndexError):
        for rows, dev, labels in p:
            got.append(int(rows[0]))
    assert got == [0, 1]  # the batches before the failing one all arrive
    assert not p.thread.is_alive()


def test_the_training_loop_frees_a_step_input_before_the_next_batch_is_assembled(tiny_cohort, tmp_path,
                                                                                 monkeypatch):
    """While batch k+1 is being assembled, nothing may still hold batch k's model input (the loop's own
    variables, its context, or zip()'s reused result tuple): on a GPU that would be a second batch of inputs
    beside the augmentation's temporaries."""
    from conftest import tiny_overrides

    from mvmammo.config import resolve
    from mvmammo.training import loop

    produced: list[weakref.ref] = []
    alive_at_assembly: list[int] = []

    class Watched(BatchMaker):
        def assemble(self, rows, raw, labels, train, generator=None, n_draw=None, part=None):
            if train:
                alive_at_assembly.append(sum(r() is not None for r in produced))
            batch = super().assemble(rows, raw, labels, train, generator, n_draw, part)
            if train:
                produced.append(weakref.ref(batch["cc"].untyped_storage()))
            return batch

    real = loop.maker_for

    def watched_maker(cfg, cache, device):
        m = real(cfg, cache, device)
        return Watched(m.cache, m.device, m.channels_last, m.resize_mode, m.dtype, m.prefetch, m.compile)

    monkeypatch.setattr(loop, "maker_for", watched_maker)
    loop.train(resolve("default", tiny_overrides(tiny_cohort, tmp_path / "run", **{"optim.epochs": 1})))
    assert len(produced) >= 3
    assert alive_at_assembly == [0] * len(alive_at_assembly)
