"""The window cache: decode once, resumable, checksummed, geometry of windows and margins."""
import numpy as np
import pandas as pd
import pytest

from mvmammo.data import cache as cache_mod
from mvmammo.data import cache_spec
from mvmammo.data import exams
from mvmammo.data.images import write_png16


def _table(tmp_path, n=6, shape=(40, 30), margin=None):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        for v in ("cc", "mlo"):
            write_png16(tmp_path / f"{i}_{v}.png", rng.integers(1, 4096, shape).astype(np.uint16))
        rows.append({"patient_id": f"p{i}", "exam_id": "e", "side": "L", "cc_path": f"{i}_cc.png",
                     "mlo_path": f"{i}_mlo.png", "benign": i % 2, "malignant": 0,
                     "split": ["train", "val", "test"][i % 3]})
    df = pd.DataFrame(rows)
    if margin is not None:
        df["cc_window_margin"] = margin
        df["mlo_window_margin"] = margin
    exams.write_table(df, tmp_path / "t.csv")
    return exams.load_valid(tmp_path / "t.csv")


def test_same_size_no_margin_stores_exact_pixels(tmp_path):
    df = _table(tmp_path)
    c = cache_mod.build_cache(df, tmp_path / "c", (40, 30), (40, 30), heatmaps=False, noise_px=0, progress=False)
    from mvmammo.data.images import read_image

    for i in range(len(df)):
        assert np.array_equal(c.load(np.array([i]), "cc")[0, 0], read_image(tmp_path / f"{i}_cc.png"))
    assert c.verify() == []


def test_margin_is_zero_padding_around_a_whole_image_window(tmp_path):
    df = _table(tmp_path)
    # 2677 px at full resolution -> 40 px here; 100 px noise -> round(100 * 40 / 2677) = 1 px... use 400 px -> 6 px.
    c = cache_mod.build_cache(df, tmp_path / "c", (40, 30), (40, 30), heatmaps=False, noise_px=400, progress=False)
    m = c.spec.margin_cc
    assert m == round(400 * 40 / 2677) == 6
    x = c.load(np.arange(len(df)), "cc")
    assert x.shape == (len(df), 1, 40 + 2 * m, 30 + 2 * m)
    assert (x[:, :, :m] == 0).all() and (x[:, :, :, -m:] == 0).all()
    from mvmammo.data.images import read_image

    assert np.array_equal(x[2, 0, m:-m, m:-m], read_image(tmp_path / "2_cc.png"))


def test_source_margin_supplies_context(tmp_path):
    # Preprocessed windows carry M px of real context: the cache's margin takes it instead of zeros.
    df = _table(tmp_path, shape=(48, 38), margin=4)
    c = cache_mod.build_cache(df, tmp_path / "c", (40, 30), (40, 30), heatmaps=False, noise_px=4 * 2677 / 40,
                              progress=False)
    assert c.spec.margin_cc == 4
    from mvmammo.data.images import read_image

    assert np.array_equal(c.load(np.array([1]), "mlo")[0, 0], read_image(tmp_path / "1_mlo.png"))


def test_downscale_keeps_geometry(tmp_path):
    # A linear ramp: any symmetric resampling filter maps it to the ramp at the output pixel centres, so a
    # 2x downscale must equal the 2x2 block means (away from the border, where the filter is clamped).
    df = _table(tmp_path, n=3, shape=(80, 60))
    yy, xx = np.mgrid[0:80, 0:60]
    write_png16(tmp_path / "0_cc.png", (10 * yy + 3 * xx + 100).astype(np.uint16))
    c = cache_mod.build_cache(df, tmp_path / "c", (40, 30), (40, 30), heatmaps=False, noise_px=0, progress=False)
    x = c.load(np.array([0]), "cc")[0, 0].astype(float)
    expect = (10 * yy + 3 * xx + 100).reshape(40, 2, 30, 2).mean(axis=(1, 3))
    assert np.abs(x - expect)[2:-2, 2:-2].max() <= 1.0


def test_interrupted_build_resumes(tmp_path, monkeypatch):
    df = _table(tmp_path)
    calls = {"n": 0}
    real = cache_spec.read_view

    def flaky(df_, row, view, spec):
        calls["n"] += 1
        if calls["n"] == 7:  # dies on the 4th breast
            raise KeyboardInterrupt
        return real(df_, row, view, spec)

    monkeypatch.setattr(cache_spec, "read_view", flaky)
    with pytest.raises(KeyboardInterrupt):
        cache_mod.build_cache(df, tmp_path / "c", (40, 30), (40, 30), heatmaps=False, noise_px=0, progress=False)
    monkeypatch.setattr(cache_spec, "read_view", real)
    # done.npy is only flushed every 256 rows or at the end: after a kill, rows restart from the last flush,
    # never skipping any; count reads on the second pass.
    counted = {"n": 0}

    def counting(df_, row, view, spec):
        counted["n"] += 1
        return real(df_, row, view, spec)

    monkeypatch.setattr(cache_spec, "read_view", counting)
    c = cache_mod.build_cache(df, tmp_path / "c", (40, 30), (40, 30), heatmaps=False, noise_px=0, progress=False)
    assert counted["n"] <= 2 * len(df)
    assert c.verify() == []
    counted["n"] = 0
    cache_mod.build_cache(df, tmp_path / "c", (40, 30), (40, 30), heatmaps=False, noise_px=0, progress=False)
    assert counted["n"] == 0  # a complete cache is reused, nothing decoded again


def test_corrupt_image_names_row_and_file(tmp_path):
    df = _table(tmp_path)
    (tmp_path / "3_mlo.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(cache_mod.CacheError) as err:
        cache_mod.build_cache(df, tmp_path / "c", (40, 30), (40, 30), heatmaps=False, noise_px=0, progress=False)
    assert "row 5" in str(err.value) and "3_mlo.png" in str(err.value)


def test_heatmaps_required_when_asked(tmp_path):
    df = _table(tmp_path)
    with pytest.raises(cache_mod.CacheError, match="data.heatmaps=false"):
        cache_mod.build_cache(df, tmp_path / "c", (40, 30), (40, 30), heatmaps=True, progress=False)


def test_checksum_detects_corruption(tmp_path):
    df = _table(tmp_path)
    cache_mod.build_cache(df, tmp_path / "c", (40, 30), (40, 30), heatmaps=False, noise_px=0, progress=False)
    arr = np.load(tmp_path / "c" / "cc.npy", mmap_mode="r+")
    arr[2, 0, 5, 5] ^= 1
    arr.flush()
    del arr
    bad = cache_mod.WindowCache(tmp_path / "c").verify()
    assert len(bad) == 1 and "row 2" in bad[0] and "cc" in bad[0]
