"""The compressed window store: lossless image channel, heatmap block means, resume, change detection, torn
shards, full disk, verification, and the same batches as the memory-mapped cache."""
from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import torch

from mvmammo.data import cache_files, exams
from mvmammo.data.cache import build_cache, make_spec
from mvmammo.data.cache_files import CacheError
from mvmammo.data.store import WindowStore, build_store, heat_factor_for
from mvmammo.data.store import build as store_build
from mvmammo.data.store import format as fmt
from mvmammo.data.store.loader import fill
from mvmammo.data.store.reader import upsample_heat

from disk import small_tmpfs

SPEC = dict(size_cc=(64, 48), size_mlo=(64, 48), heatmaps=True, noise_px=100.0)


@pytest.fixture(scope="module")
def table(tiny_cohort):
    return exams.load_valid(tiny_cohort)


@pytest.fixture(scope="module")
def pair(table, tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    spec = make_spec(**SPEC)
    store = build_store(table, root / "s", spec, heat_factor=1, workers=2, progress=False)
    cache = build_cache(table, root / "m", SPEC["size_cc"], SPEC["size_mlo"], True, 100.0, progress=False)
    return store, cache


def test_heat_factor_rule():
    assert heat_factor_for(2677) == 8  # full resolution: 8 px cells
    assert heat_factor_for(1338) == 3
    assert heat_factor_for(128) == 1  # demo scale: stored as is


def test_block_means_by_hand():
    heat = np.zeros((2, 5, 4), dtype=np.float32)
    heat[0] = np.arange(20, dtype=np.float32).reshape(5, 4) / 20
    small = fmt.downsample_heat(heat, 2)  # blocks of 2x2; the last row block holds one row
    assert small.shape == (2, 3, 2) and small.dtype == np.float16
    expected = np.array([[(0 + 1 + 4 + 5) / 4, (2 + 3 + 6 + 7) / 4], [(8 + 9 + 12 + 13) / 4, (10 + 11 + 14 + 15) / 4],
                         [(16 + 17) / 2, (18 + 19) / 2]]) / 20
    np.testing.assert_allclose(small[0].astype(np.float64), expected, atol=1e-3)
    assert (small[1] == 0).all()


def test_upsampling_puts_blocks_back_where_they_were():
    blocks = torch.zeros(1, 1, 3, 3)
    blocks[0, 0, 1, 1] = 1.0
    up = upsample_heat(blocks, (12, 12))  # factor 4
    assert up.shape == (1, 1, 12, 12)
    assert torch.argmax(up[0, 0]).item() in {5 * 12 + 5, 5 * 12 + 6, 6 * 12 + 5, 6 * 12 + 6}  # the centre block
    assert torch.allclose(up[0, 0], up[0, 0].flip(0).flip(1))  # symmetric about the middle block


def test_image_is_lossless_and_heatmaps_match_at_factor_one(pair):
    store, cache = pair
    rows = np.arange(len(cache))
    for v in ("cc", "mlo"):
        a, b = store.load(rows, v), cache.load(rows, v)
        assert a.shape == b.shape
        assert np.array_equal(a[:, 0], b[:, 0])
        assert np.abs(a[:, 1:].astype(np.int64) - b[:, 1:].astype(np.int64)).max() <= 65535 * 1e-3  # fp16
    assert store.verify() == []
    assert np.array_equal(store.labels(), cache.labels())
    assert list(store.rows("train")) == list(cache.rows("train"))


def test_threaded_fill_equals_plain_reads(pair):
    store, _ = pair
    rows = np.array([5, 0, 17, 3])
    _, hp, wp = store.spec.stored_shape("cc")
    img = np.empty((4, 1, hp, wp), dtype=np.uint16)
    heat = np.empty((4, 2, *store.heat_shape("cc")), dtype=np.float16)
    fill(store, "cc", rows, img, heat, threads=2)
    ref_img, ref_heat = store.load_parts(rows, "cc")
    assert np.array_equal(img, ref_img) and np.array_equal(heat, ref_heat)


def test_store_is_smaller_than_the_cache(pair):
    store, cache = pair
    stored = sum(p.stat().st_size for p in (store.root / "shards").glob("*.bin"))
    assert stored < 0.7 * sum(cache.spec.row_bytes(v) for v in ("cc", "mlo")) * len(cache)


def test_resume_after_a_kill_and_torn_shard(table, tmp_path, monkeypatch):
    spec = make_spec(**SPEC)
    real = store_build.encode_row
    calls = {"n": 0}

    def dies(task):
        calls["n"] += 1
        if calls["n"] > 70:  # after one committed chunk of 64
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(store_build, "encode_row", dies)
    with pytest.raises(KeyboardInterrupt):
        build_store(table, tmp_path / "s", spec, heat_factor=1, progress=False)
    shard = tmp_path / "s" / "shards" / "00000.bin"
    with open(shard, "ab") as f:
        f.write(b"torn tail of a killed write")
    monkeypatch.setattr(store_build, "encode_row", real)
    calls["n"] = 0
    counted = []
    monkeypatch.setattr(store_build, "encode_row", lambda t: (counted.append(t[0]), real(t))[1])
    store = build_store(table, tmp_path / "s", spec, heat_factor=1, progress=False)
    assert min(counted) >= 64 and len(counted) == len(table) - 64  # only the uncommitted rows again
    assert store.verify() == []
    full = build_store(table, tmp_path / "full", spec, heat_factor=1, progress=False)
    rows = np.arange(len(table))
    assert np.array_equal(store.load(rows, "mlo"), full.load(rows, "mlo"))


def test_a_changed_image_is_encoded_again(table, tmp_path, capsys):
    import shutil

    from PIL import Image

    folder = tmp_path / "cohort"
    shutil.copytree(table.attrs["root"], folder)
    df = exams.load_valid(folder / "exams.csv")
    spec = make_spec(**SPEC)
    store = build_store(df, tmp_path / "s", spec, heat_factor=1, progress=False)
    before = store.load(np.array([2]), "cc")
    path = exams.resolve_path(df, df["cc_path"].iloc[2])
    arr = np.asarray(Image.open(path)).copy()
    arr[:8, :8] = 4000
    Image.fromarray(arr).save(path)
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 5_000_000_000))
    capsys.readouterr()
    store = build_store(df, tmp_path / "s", spec, heat_factor=1, progress=False)
    assert "1 row(s) whose images changed" in capsys.readouterr().err
    assert not np.array_equal(before, store.load(np.array([2]), "cc"))


def test_other_geometry_rebuilds(table, tmp_path, capsys):
    build_store(table, tmp_path / "s", make_spec(**SPEC), heat_factor=1, progress=False)
    capsys.readouterr()
    other = make_spec((48, 32), (48, 32), True, 100.0)
    store = build_store(table, tmp_path / "s", other, heat_factor=1, progress=False)
    assert "window geometry differs" in capsys.readouterr().err
    assert store.load(np.array([0]), "cc").shape[-2:] == tuple(s + 2 * store.spec.margin_cc for s in (48, 32))


def test_corruption_is_found_by_verify(pair, tmp_path):
    import shutil

    store, _ = pair
    copy = tmp_path / "copy"
    shutil.copytree(store.root, copy)
    shard = copy / "shards" / "00000.bin"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    bad = WindowStore(copy).verify()
    assert bad and "checksum mismatch" in bad[0]


def test_full_disk_is_one_clear_error(table, tmp_path, monkeypatch):
    real = cache_files.pwrite_all
    state = {"n": 0}

    def full(fd, data, offset):
        state["n"] += 1
        if state["n"] > 10:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(cache_files, "pwrite_all", full)
    with pytest.raises(CacheError, match="no space left"):
        build_store(table, tmp_path / "s", make_spec(**SPEC), heat_factor=1, progress=False)
    assert not list((tmp_path / "s").rglob("*.tmp"))


def test_full_disk_for_real(table, tmp_path):
    with small_tmpfs(tmp_path / "small", "256k") as disk:
        with pytest.raises(CacheError, match="no space left"):
            build_store(table, disk / "s", make_spec(**SPEC), heat_factor=1, progress=False)
        assert not list(disk.rglob("*.tmp"))


def test_training_batches_from_the_store_equal_the_caches(pair):
    """The training input path (BatchMaker: pinned buffers, prefetch thread, device-side heatmap upsampling,
    random windows) gives the same batches from the store as from the memory-mapped cache."""
    from mvmammo.training.inputs import BatchMaker

    store, cache = pair
    chunks = [np.array([3, 1, 4, 0]), np.array([5, 9, 2, 6])]
    for prefetch in (0, 2):
        got = {}
        for name, src in (("store", store), ("cache", cache)):
            maker = BatchMaker(src, torch.device("cpu"), prefetch=prefetch)
            gen = torch.Generator().manual_seed(7)
            got[name] = list(maker.batches(chunks, train=True, generator=gen))
        for a, b in zip(got["store"], got["cache"]):
            for v in ("cc", "mlo"):
                assert a[v].shape == b[v].shape
                assert torch.equal(a[v][:, 0], b[v][:, 0])  # image channel: identical
                assert torch.allclose(a[v][:, 1:], b[v][:, 1:], atol=5e-3)  # heatmaps: float16 grid
            assert torch.equal(a["malignant"], b["malignant"]) and torch.equal(a["present"], b["present"])
