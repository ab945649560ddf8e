"""The fast data path (prefetching thread, int16 transfer, pread into pinned buffers) gives exactly the plain
path's batches; uint16 values survive the int16 transfer; torch.compile failures fall back to eager."""
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from synthetic_cache import write_cache  # noqa: E402

from mvmammo.training import accel, inputs, prefetch  # noqa: E402
from mvmammo.training.inputs import BatchMaker  # noqa: E402


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_cache(tmp_path_factory.mktemp("cache"), breasts=10, size="small", seed=1)


def _batches(maker, chunks, seed):
    gen = torch.Generator().manual_seed(seed)
    return list(maker.batches(chunks, train=True, generator=gen))


def test_prefetched_batches_equal_plain(cache):
    chunks = [np.array([3, 1, 7]), np.array([0, 9, 2]), np.array([5, 4, 8]), np.array([6])]
    plain = _batches(BatchMaker(cache, torch.device("cpu"), prefetch=0), chunks, 0)
    fast = _batches(BatchMaker(cache, torch.device("cpu"), prefetch=2), chunks, 0)
    assert len(plain) == len(fast) == 4
    for a, b in zip(plain, fast):
        assert np.array_equal(a["rows"], b["rows"])
        for k in ("cc", "mlo", "benign", "malignant"):
            assert torch.equal(a[k], b[k]), k
    # ... and both equal the original float32 path: uint16 -> float32 on the host -> augment.
    from mvmammo.data import augment
    gen = torch.Generator().manual_seed(0)
    ref = augment.make_views(torch.from_numpy(cache.load(chunks[0], "cc").astype(np.float32)),
                             cache.spec.size("cc"), cache.spec.margin("cc"), True, gen)
    assert torch.equal(ref, plain[0]["cc"])


def test_int16_transfer_keeps_uint16_values():
    vals = np.array([0, 1, 4095, 32767, 32768, 40000, 65535], dtype=np.uint16)
    raw = torch.from_numpy(vals.view(np.int16))
    assert torch.equal(inputs.raw_to_float(raw), torch.from_numpy(vals.astype(np.float32)))
    inputs._U16_OK["cpu"] = False  # the fallback for torch versions without uint16 conversion
    try:
        assert torch.equal(inputs.raw_to_float(raw), torch.from_numpy(vals.astype(np.float32)))
    finally:
        inputs._U16_OK.pop("cpu")


def test_pread_rows_match_memmap(cache):
    arr = cache.arrays["mlo"]
    rows = np.array([4, 0, 9])
    out = torch.empty((3,) + arr.shape[1:], dtype=torch.int16)
    prefetch.fill_pinned(arr, rows, out)
    assert np.array_equal(out.numpy().view(np.uint16), arr[rows])
    dst = np.empty(arr.shape[1:], dtype=np.uint16)
    prefetch._read_row(arr, 7, dst)  # the threaded path copies rows one at a time through this
    assert np.array_equal(dst, arr[7])


def test_prefetcher_stops_when_abandoned(cache):
    chunks = [np.array([i]) for i in range(10)]
    p = prefetch.Prefetcher(cache, chunks, torch.device("cpu"), depth=1)
    it = iter(p)
    next(it)
    it.close()  # the consumer broke out of its loop (max_steps)
    assert not p.thread.is_alive()


def test_compile_failure_falls_back_to_eager(monkeypatch):
    class FakeInductorError(RuntimeError):
        pass

    FakeInductorError.__module__ = "torch._inductor.exc"

    def broken(*a, **k):
        raise FakeInductorError("no compiler")

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: broken)
    f = accel.compile_or_eager(lambda x: x + 1, True, "test")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert f(1) == 2 and f(2) == 3
    assert sum("running it eagerly" in str(x.message) for x in w) == 1
    assert accel.compile_or_eager(len, False) is len  # off: the function itself
