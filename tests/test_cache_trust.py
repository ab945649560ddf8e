"""A window cache you can trust: it notices changed inputs, survives a full disk, names a corrupt file, keeps
the aspect ratio, stores one-view breasts, and is read as is through data.cache."""
from __future__ import annotations

import errno
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from mvmammo import config as config_mod
from mvmammo.data import cache as cache_mod
from mvmammo.data import cache_spec
from mvmammo.data import cache_build, exams
from mvmammo.data.cache import CacheError, WindowCache, build_cache, margins
from mvmammo.data.images import read_image, write_png16

SIZE = (40, 30)


def _table(tmp_path, n=6, shape=(40, 30), heatmaps=False, one_view=(), unlabelled=False, settle=True):
    """n breasts of random 12-bit images; one_view: rows whose MLO path is empty. settle: back-date every
    file's mtime by an hour, as files written long before the cache (stat identity alone decides)."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        row = {"patient_id": f"p{i}", "exam_id": "e", "side": "L", "cc_path": f"{i}_cc.png",
               "mlo_path": "" if i in one_view else f"{i}_mlo.png", "benign": i % 2, "malignant": 0,
               "split": ["train", "val", "test"][i % 3]}
        for v in ("cc", "mlo"):
            write_png16(tmp_path / f"{i}_{v}.png", rng.integers(1, 4096, shape).astype(np.uint16))
            if heatmaps:
                for lab in ("benign", "malignant"):
                    write_png16(tmp_path / f"{i}_{v}_{lab}.png", rng.integers(0, 65536, shape).astype(np.uint16))
                    row[f"{v}_heatmap_{lab}"] = "" if (v == "mlo" and i in one_view) else f"{i}_{v}_{lab}.png"
        rows.append(row)
    df = pd.DataFrame(rows)
    if unlabelled:
        df["benign"], df["malignant"] = "", ""
    exams.write_table(df, tmp_path / "t.csv")
    if settle:
        old = (pd.Timestamp.now().value - 3600 * 10**9)
        for p in tmp_path.glob("*.png"):
            os.utime(p, ns=(old, old))
    return exams.load_valid(tmp_path / "t.csv", allow_missing_view=bool(one_view), require_labels=not unlabelled)


def _build(df, root, size=SIZE, **kw):
    kw.setdefault("heatmaps", False)
    kw.setdefault("noise_px", 0)
    return build_cache(df, root, size, size, progress=False, **kw)


@pytest.fixture
def reads(monkeypatch):
    """Count decoded views (calls of read_view)."""
    count = {"n": 0}
    real = cache_spec.read_view

    def counting(*a):
        count["n"] += 1
        return real(*a)

    monkeypatch.setattr(cache_spec, "read_view", counting)
    return count


# --- 1. the key covers inputs and geometry ---

def test_other_window_sizes_rebuild_and_say_why(tmp_path, capsys, reads):
    df = _table(tmp_path)
    _build(df, tmp_path / "c")
    c = _build(df, tmp_path / "c", size=(20, 15))
    assert c.load(np.array([0]), "cc").shape == (1, 1, 20, 15)
    err = capsys.readouterr().err
    assert "CC window 40x30 -> 20x15" in err and reads["n"] == 2 * 2 * len(df)


def test_unchanged_inputs_are_reused(tmp_path, capsys, reads):
    df = _table(tmp_path)
    _build(df, tmp_path / "c")
    reads["n"] = 0
    capsys.readouterr()
    _build(df, tmp_path / "c")
    assert reads["n"] == 0 and capsys.readouterr().err == ""


def test_edited_image_rebuilds_just_its_row(tmp_path, capsys, reads):
    df = _table(tmp_path)
    _build(df, tmp_path / "c")
    new = np.full(SIZE, 777, np.uint16)
    write_png16(tmp_path / "4_mlo.png", new)  # a settled file edited now: new mtime
    reads["n"] = 0
    c = _build(df, tmp_path / "c")
    assert reads["n"] == 2  # row 4's two views, nothing else
    assert np.array_equal(c.load(np.array([4]), "mlo")[0, 0], new)
    assert "1 of 6 breasts have changed inputs" in capsys.readouterr().err
    assert c.verify() == []


def test_edit_within_one_timestamp_tick_is_caught_by_content(tmp_path, reads):
    # Files written just before the build are "racy": an edit within one tick of a coarse clock can keep
    # size and mtime, so their content was hashed too. An uncompressed TIFF keeps its size exactly; the
    # edit restores the old mtime, as such a clock would.
    from PIL import Image

    df = _table(tmp_path, settle=False)
    path = tmp_path / "2_cc.tif"
    img = read_image(tmp_path / "2_cc.png").copy()
    Image.fromarray(img).save(path)
    df.loc[2, "cc_path"] = "2_cc.tif"
    _build(df, tmp_path / "c")
    st = os.stat(path)
    img[0, 0] = 4095 if img[0, 0] != 4095 else 1
    Image.fromarray(img).save(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size
    reads["n"] = 0
    c = _build(df, tmp_path / "c")
    assert reads["n"] == 2 and np.array_equal(c.load(np.array([2]), "cc")[0, 0], img)


def test_labels_and_splits_only_rewrite_the_index(tmp_path, capsys, reads):
    df = _table(tmp_path)
    _build(df, tmp_path / "c")
    df2 = df.copy()
    df2.loc[1, "malignant"] = 1
    reads["n"] = 0
    c = _build(df2, tmp_path / "c")
    assert reads["n"] == 0 and c.labels()[1].tolist() == [1, 1]
    assert "index.csv rewritten" in capsys.readouterr().err


def test_heatmap_file_change_rebuilds(tmp_path, reads):
    df = _table(tmp_path, heatmaps=True)
    _build(df, tmp_path / "c", heatmaps=True)
    hm = np.full(SIZE, 65535, np.uint16)
    write_png16(tmp_path / "3_cc_malignant.png", hm)
    reads["n"] = 0
    c = _build(df, tmp_path / "c", heatmaps=True)
    assert reads["n"] == 2 and (c.load(np.array([3]), "cc")[0, 2] == 65535).all()


@pytest.mark.parametrize("change", ["noise_px", "keep_aspect", "window_margin"])
def test_every_preprocessing_parameter_is_in_the_key(tmp_path, capsys, change):
    df = _table(tmp_path)
    _build(df, tmp_path / "c")
    capsys.readouterr()
    if change == "noise_px":
        _build(df, tmp_path / "c", noise_px=400)
        assert "CC margin 0 -> 6" in capsys.readouterr().err
    elif change == "keep_aspect":
        _build(df, tmp_path / "c", keep_aspect=False)
        assert "keep_aspect True -> False" in capsys.readouterr().err
    else:
        df2 = df.copy()
        df2["cc_window_margin"] = 2
        c = _build(df2, tmp_path / "c")
        assert "6 of 6 breasts have changed inputs" in capsys.readouterr().err
        # a 2-px source margin: the 36x26 inner window is scaled to 40x30 (keep aspect: by min(40/36, 30/26))
        assert c.verify() == []


def test_added_rows_copy_the_unchanged_ones(tmp_path, capsys, reads):
    df = _table(tmp_path, n=6)
    first = _build(df, tmp_path / "c").load(np.arange(6), "cc")
    df7 = _table(tmp_path, n=7)  # rewrites 0..5 with the same pixels; re-settle so stat matches? no: new mtimes
    reads["n"] = 0
    c = _build(df7, tmp_path / "c")
    assert "rows 6 -> 7" in capsys.readouterr().err
    assert np.array_equal(c.load(np.arange(6), "cc"), first) and c.verify() == []
    # Same files untouched since: adding a row copies the six old ones instead of decoding them.
    df8 = df7.copy()
    write_png16(tmp_path / "extra_cc.png", np.full(SIZE, 5, np.uint16))
    write_png16(tmp_path / "extra_mlo.png", np.full(SIZE, 6, np.uint16))
    df8.loc[7] = {**df7.iloc[0].to_dict(), "patient_id": "p7", "cc_path": "extra_cc.png",
                  "mlo_path": "extra_mlo.png", "breast_id": "p7/e/L"}
    reads["n"] = 0
    c = _build(df8, tmp_path / "c")
    assert reads["n"] == 2 and len(c) == 8 and c.verify() == []
    assert (c.load(np.array([7]), "mlo")[0, 0] == 6).all()


# --- 2. full disk ---

def _assert_clean_failure(root, err, old):
    msg = str(err.value)
    assert "\n" not in msg and str(root) in msg and "free at least" in msg and "no space left" in msg
    assert not (root / cache_build.STAGING).exists()
    assert not [p for p in root.rglob("*.tmp")]
    kept = WindowCache(root)  # the last good cache is intact
    assert kept.spec.size_cc == old and kept.verify() == []


def test_full_disk_at_allocation_keeps_the_last_good_cache(tmp_path, monkeypatch):
    df = _table(tmp_path)
    _build(df, tmp_path / "c")

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(CacheError) as err:
        _build(df, tmp_path / "c", size=(20, 15))
    _assert_clean_failure(tmp_path / "c", err, SIZE)
    assert "deleting the outdated cache" in str(err.value)


def test_full_disk_at_a_row_write_keeps_the_last_good_cache(tmp_path, monkeypatch):
    df = _table(tmp_path)
    _build(df, tmp_path / "c")
    real = os.pwrite
    calls = {"n": 0}

    def no_fallocate(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    def pwrite(fd, data, offset):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "posix_fallocate", no_fallocate)
    monkeypatch.setattr(os, "pwrite", pwrite)
    with pytest.raises(CacheError) as err:
        _build(df, tmp_path / "c", size=(20, 15))
    _assert_clean_failure(tmp_path / "c", err, SIZE)


def test_full_disk_while_rewriting_the_index_keeps_the_old_one(tmp_path, monkeypatch):
    df = _table(tmp_path)
    _build(df, tmp_path / "c")
    df2 = df.copy()
    df2.loc[0, "benign"] = 1 - df2.loc[0, "benign"]

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(CacheError) as err:
        _build(df2, tmp_path / "c")
    monkeypatch.undo()
    _assert_clean_failure(tmp_path / "c", err, SIZE)
    assert WindowCache(tmp_path / "c").labels()[0, 0] == df.loc[0, "benign"]


def test_full_disk_on_a_real_small_file_system(tmp_path):
    from disk import small_tmpfs

    df = _table(tmp_path, n=6, shape=(200, 150))
    with small_tmpfs(tmp_path / "small", "64k") as mnt:
        with pytest.raises(CacheError) as err:
            _build(df, mnt / "c", size=(200, 150))
        msg = str(err.value)
        assert "no space left" in msg and str(mnt / "c") in msg and "\n" not in msg
        assert sorted(p.name for p in (mnt / "c").iterdir()) == [".cache.lock"]  # nothing half-written


def test_cli_full_disk_is_one_error_line(tmp_path, monkeypatch, capsys):
    from mvmammo.cli import main

    _table(tmp_path)

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    rc = main(["cache", str(tmp_path / "t.csv"), "--out", str(tmp_path / "c"), "--no-heatmaps", "--format", "memmap",
               "--size-cc", "40", "30", "--size-mlo", "40", "30"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert rc == 1 and len(err) == 1 and "no space left" in err[0] and "--out" in err[0]


# --- 3. corrupt files ---

def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("name,damage", [("done.npy", _truncate), ("checksums.npy", _truncate),
                                         ("meta.json", _truncate), ("index.csv", lambda p: p.write_bytes(b"\xff\xfe")),
                                         ("cc.npy", _truncate), ("meta.json", lambda p: p.write_text("[]"))])
def test_corrupt_file_is_one_line_naming_it(tmp_path, name, damage):
    df = _table(tmp_path)
    _build(df, tmp_path / "c")
    damage(tmp_path / "c" / name)
    with pytest.raises(CacheError) as err:
        WindowCache(tmp_path / "c")
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "c" / name) in msg and "mvmammo cache" in msg


def test_corrupt_cache_is_rebuilt_by_build(tmp_path, capsys):
    df = _table(tmp_path)
    _build(df, tmp_path / "c")
    _truncate(tmp_path / "c" / "done.npy")
    c = _build(df, tmp_path / "c")
    assert c.verify() == [] and "unreadable" in capsys.readouterr().err


def test_interrupted_rebuild_keeps_old_cache_then_resumes(tmp_path, monkeypatch, reads):
    df = _table(tmp_path)
    _build(df, tmp_path / "c")
    real = cache_spec.read_view

    def dies(*a):
        if reads["n"] >= 5:
            raise KeyboardInterrupt
        reads["n"] += 1
        return real(*a)

    reads["n"] = 0
    monkeypatch.setattr(cache_spec, "read_view", dies)
    with pytest.raises(KeyboardInterrupt):
        _build(df, tmp_path / "c", size=(20, 15))
    assert WindowCache(tmp_path / "c").spec.size_cc == SIZE  # still the old, complete cache
    monkeypatch.setattr(cache_spec, "read_view", real)
    c = _build(df, tmp_path / "c", size=(20, 15))
    assert c.spec.size_cc == (20, 15) and c.verify() == [] and not (tmp_path / "c" / cache_build.STAGING).exists()


# --- 5. aspect ratio ---

def test_keep_aspect_scales_uniformly_and_pads_right(tmp_path):
    df = _table(tmp_path, n=3, shape=(80, 30))
    yy, xx = np.mgrid[0:80, 0:30]
    ramp = (10 * yy + 3 * xx + 100).astype(np.uint16)
    write_png16(tmp_path / "0_cc.png", ramp)
    kept = _build(df, tmp_path / "k", size=(40, 30)).load(np.array([0]), "cc")[0, 0].astype(float)
    # scale min(40/80, 30/30) = 0.5: the image becomes 40x15 at the left; columns 15.. are zero padding
    expect = ramp.astype(float).reshape(40, 2, 15, 2).mean(axis=(1, 3))
    assert np.abs(kept[1:-1, 1:14] - expect[1:-1, 1:14]).max() <= 1.0
    assert (kept[:, 16:] == 0).all()
    stretched = _build(df, tmp_path / "s", size=(40, 30), keep_aspect=False).load(np.array([0]), "cc")[0, 0]
    # stretch: rows halve, columns stay (a ramp's 2x1 means)
    expect_s = ramp.astype(float).reshape(40, 2, 30).mean(axis=1)
    assert np.abs(stretched[1:-1, 1:-1] - expect_s[1:-1, 1:-1]).max() <= 1.0


# --- 7. the MLO margin ---

def test_margin_is_100px_at_full_resolution_for_each_view():
    assert margins((2677, 1942), (2974, 1748), 100.0) == (100, 100)
    assert margins((128, 96), (128, 96), 100.0) == (round(100 * 128 / 2677), round(100 * 128 / 2974)) == (5, 4)


# --- 6. one view, unlabelled rows ---

def test_one_view_rows_are_zeros_and_flagged(tmp_path):
    df = _table(tmp_path, heatmaps=True, one_view=(1, 4))
    c = _build(df, tmp_path / "c", heatmaps=True, noise_px=400)
    assert c.present().tolist() == [[True, not (i in (1, 4))] for i in range(6)]
    assert (c.load(np.array([1, 4]), "mlo") == 0).all() and c.load(np.array([1]), "cc").any()
    idx = pd.read_csv(tmp_path / "c" / "index.csv")
    assert idx["has_mlo"].tolist() == [True, False, True, True, False, True]
    from mvmammo.training.inputs import BatchMaker

    for prefetch in (0, 2):
        maker = BatchMaker(c, torch.device("cpu"), prefetch=prefetch)
        batch = next(maker.batches([np.array([0, 1, 4])], train=True, generator=torch.Generator().manual_seed(0)))
        assert batch["present"].dtype == torch.float32
        assert batch["present"].tolist() == [[1.0, 1.0], [1.0, 0.0], [1.0, 0.0]]


def test_unlabelled_rows_are_stored_as_minus_one(tmp_path):
    df = _table(tmp_path, unlabelled=True)
    c = _build(df, tmp_path / "c")
    assert (c.labels() == -1).all()


# --- 4. data.cache=DIR, prepare_cache, the command's own flags ---

def _cfg(tmp_path, **over):
    base = {"data.size_cc": "(40, 30)", "data.size_mlo": "(40, 30)", "data.aug_noise_px": "0",
            "data.cache_dir": str(tmp_path / "_cache"), "run.out": str(tmp_path / "run"), "run.progress": "false"}
    base.update(over)
    return config_mod.resolve("default", [f"{k}={v}" for k, v in base.items()])


def test_prebuilt_cache_is_read_as_is_with_its_own_channels(tmp_path, capsys):
    from mvmammo.cli import main
    from mvmammo.training.inputs import prepare_cache

    _table(tmp_path, one_view=(2,))
    assert main(["cache", str(tmp_path / "t.csv"), "--out", str(tmp_path / "pre"), "--no-heatmaps",
                 "--allow-missing-view", "--size-cc", "40", "30", "--size-mlo", "40", "30"]) == 0
    c = prepare_cache(_cfg(tmp_path, **{"data.cache": str(tmp_path / "pre"), "data.heatmaps": "true"}))
    assert c.spec.channels == 1 and c.root == tmp_path / "pre"
    assert "using the cache's own 1 channel(s)" in capsys.readouterr().err
    assert 2 not in c.rows("test") and len(c.rows("test")) == 1  # drop: the one-view breast (row 2) left out
    c = prepare_cache(_cfg(tmp_path, **{"data.cache": str(tmp_path / "pre"), "data.heatmaps": "false",
                                        "data.missing_view": "mask"}))
    assert c.rows("test").tolist() == [2, 5]


def test_prepare_cache_drops_one_view_rows_with_a_note(tmp_path, capsys):
    from mvmammo.training.inputs import prepare_cache

    _table(tmp_path, one_view=(0, 3))
    cfg = _cfg(tmp_path, **{"data.table": str(tmp_path / "t.csv"), "data.heatmaps": "false"})
    assert len(prepare_cache(cfg)) == 4
    assert "2 breast(s) with one view left out" in capsys.readouterr().err
    masked = prepare_cache(_cfg(tmp_path, **{"data.table": str(tmp_path / "t.csv"), "data.heatmaps": "false",
                                             "data.missing_view": "mask"}))
    assert len(masked) == 6 and masked.present()[:, 1].sum() == 4


def test_cache_command_names_its_own_flags(tmp_path, capsys):
    from mvmammo.cli import main

    _table(tmp_path)
    rc = main(["cache", str(tmp_path / "t.csv"), "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 1 and "--no-heatmaps" in err and "data.heatmaps" not in err
    assert main(["cache", str(tmp_path / "t.csv"), "--out", str(tmp_path / "c"), "--no-heatmaps", "--stretch",
                 "--size-cc", "20", "30", "--size-mlo", "20", "30"]) == 0
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["spec"]["keep_aspect"] is False and meta["spec"]["channels"] == 1


def test_train_reads_a_no_heatmaps_cache_through_data_cache(tiny_cohort, tmp_path):
    from conftest import tiny_overrides

    from mvmammo.cli import main
    from mvmammo.training.loop import train

    assert main(["cache", str(tiny_cohort), "--out", str(tmp_path / "pre"), "--no-heatmaps",
                 "--size-cc", "64", "48", "--size-mlo", "64", "48"]) == 0
    cfg = config_mod.resolve("default", tiny_overrides(tiny_cohort, tmp_path / "run", **{
        "data.cache": str(tmp_path / "pre"), "optim.epochs": 1, "run.max_steps": 2, "run.tta": 0}))
    assert cfg.data.heatmaps  # the config still says 3 channels: the cache's own 1 channel wins
    run = train(cfg)
    assert (run / "last.pt").exists()
    assert not (tmp_path / "_cache" / "windows").exists()  # nothing built besides the prebuilt cache
