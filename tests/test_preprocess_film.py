"""Preprocessing on scanned film and digital images: automatic threshold, breast component, zeroed
background, chest-wall side, minimum breast area, pixel spacing, one-view breasts, the per-breast report."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fixture_files import breast_image, write_dicom
from PIL import Image, ImageDraw, ImageFont

from mvmammo.cli import main
from mvmammo.data import exams
from mvmammo.data.breast_mask import breast_mask, chest_wall_side, strip_bands
from mvmammo.data.images import read_image, write_png16
from mvmammo.data.preprocess import PreprocessError, Settings, apply, plan
from mvmammo.data.preprocess_table import preprocess_table
from mvmammo.data.spacing import parse_spacing, resample


def film_image(h=480, w=320, chest="L", seed=0, band="top", marker_side=None, view="cc", bg=(40, 90)):
    """An 8-bit scanned-film-like mammogram (values 0..255 in uint16) and its true breast mask.

    Noisy background between bg[0] and bg[1] (a slow vertical gradient + grain), a half-elliptic breast from
    the chest-wall edge whose brightness falls towards the skin line, a bright film edge band along one border,
    a marker ("LCC"/"RCC", drawn with PIL) and a bright label patch with dark text, both clear of the breast.
    Returns (image, breast, artefacts): bool masks of the breast and of everything bright that is not breast.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = bg[0] + (bg[1] - bg[0]) * yy / h
    img = base + rng.normal(0, 6, size=(h, w))
    d = xx if chest == "L" else (w - 1 - xx)          # distance from the chest-wall edge
    cy, ry = (h * 0.5, h * 0.3) if view == "cc" else (h * 0.42, h * 0.4)
    rr = ((yy - cy) / ry) ** 2 + (d / (w * 0.55)) ** 2
    breast = rr <= 1
    tissue = 120 + 90 * np.sqrt(np.clip(1 - rr, 0, 1)) + rng.normal(0, 8, size=(h, w))
    img = np.where(breast, np.maximum(tissue, base + 30), img)
    art = np.zeros((h, w), bool)
    if band:
        k = max(3, int(0.04 * (h if band in ("top", "bottom") else w)))
        sl = {"top": np.s_[:k, :], "bottom": np.s_[-k:, :], "left": np.s_[:, :k], "right": np.s_[:, -k:]}[band]
        img[sl] = 235 + rng.normal(0, 4, size=img[sl].shape)
        art[sl] = True
        breast[sl] = False
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    far = marker_side or ("R" if chest == "L" else "L")  # default: markers on the side away from the chest wall
    mx = int(w * 0.74) if far == "R" else int(w * 0.07)
    draw.text((mx, int(h * 0.07)), f"{chest}CC", fill=250, font=ImageFont.load_default(size=h // 20))
    lx = int(w * 0.70) if far == "R" else int(w * 0.05)
    draw.rectangle([lx, int(h * 0.86), lx + int(w * 0.24), int(h * 0.93)], fill=245)
    draw.text((lx + 3, int(h * 0.87)), "ID 42", fill=30, font=ImageFont.load_default(size=h // 40))
    out = np.asarray(pil).astype(np.uint16)
    art |= (out >= 200) & ~breast & (np.abs(out.astype(float) - img) > 20)  # drawn marker / label pixels
    art[int(h * 0.86):int(h * 0.93) + 1, lx:lx + int(w * 0.24) + 1] = True
    return out, breast, art


CASES = [("L", "top", None, "cc"), ("R", "right", None, "cc"), ("L", "left", "L", "mlo"),
         ("R", "bottom", "R", "mlo"), ("R", "top", "L", "cc"), ("L", "right", "R", "mlo")]


@pytest.mark.parametrize("chest,band,marker_side,view", CASES)
def test_film_mask_side_zeroed_background_and_window(chest, band, marker_side, view):
    img, truth, art = film_image(chest=chest, band=band, marker_side=marker_side, view=view, seed=len(band))
    bm = breast_mask(img)
    assert bm.method == "otsu-background" and 40 <= bm.threshold <= 120  # between background and tissue
    full = bm.full(img)
    iou = (full & truth).sum() / (full | truth).sum()
    assert iou > 0.97
    assert not (full & art).any()  # band, marker and label are not breast
    assert bm.chest_wall == chest
    geo = plan(img, view, (400, 200), margin=10, crop_margin=5)
    assert geo.flipped == (chest == "R")
    win = apply(img, geo)
    assert win.shape == (420, 220)
    # everything outside the breast is zero in the window: the window of the image without its breast is empty
    assert apply(np.where(truth, 0, img).astype(np.uint16), geo).max() == 0 or \
        (apply(np.where(truth, 0, img).astype(np.uint16), geo) > 0).mean() < 0.002
    assert (apply(art.astype(np.uint16), geo) == 0).all()
    # the window holds the breast, chest wall at its left edge
    inner = win[10:-10, 10:-10]
    assert (inner > 0).sum() > 0.95 * min(truth.sum(), 400 * 200)
    cols = (inner > 0).mean(axis=0)          # breast height per window column
    first = int(np.argmax(cols > 0))          # a band on the chest-wall side leaves the crop margin (5 px) empty
    assert first <= 6 and cols[first:first + 5].max() > 0.5 > cols[-1]


def test_film_in_a_zero_scanner_area_and_16bit_film():
    img, truth, _ = film_image(chest="R", band=None, seed=5)
    padded = np.pad(img, ((0, 0), (60, 0)))        # a zero-filled scanner bed left of the film: 16 % flat pixels
    bm = breast_mask(padded)
    assert bm.method == "otsu-background" and bm.chest_wall == "R"   # the film rectangle was not taken as breast
    full = bm.full(padded)[:, 60:]
    assert (full & truth).sum() / (full | truth).sum() > 0.97
    film16 = (img.astype(np.uint32) * 257).astype(np.uint16)         # the same film stored as 16-bit
    bm16 = breast_mask(film16)
    assert bm16.method == "otsu-background" and bm16.threshold == pytest.approx(bm.threshold * 257, rel=0.05)
    assert (bm16.full(film16) & truth).sum() / (bm16.full(film16) | truth).sum() > 0.97


def test_fixed_background_keeps_the_old_rule():
    img, _, _ = film_image(seed=3)
    bm = breast_mask(img, background=100)
    assert (bm.method, bm.threshold) == ("fixed", 100.0)
    # the old fixed rule at 0 takes the whole film (the reported bug); auto does not
    assert breast_mask(img, background=0).area_frac > 0.9 > 0.5 > breast_mask(img).area_frac


def test_digital_16bit_zero_background_with_marker():
    img = np.zeros((500, 300), np.uint16)
    img[60:440, 140:300] = breast_image(380, 160, facing="left", value=1200)   # chest wall on the right edge
    img[20:60, 10:90] = 4095                                                    # a burnt-in marker block
    pil = Image.fromarray(np.zeros((500, 300), np.uint8))
    ImageDraw.Draw(pil).text((20, 450), "R MLO", fill=255, font=ImageFont.load_default(size=30))
    img[np.asarray(pil) > 0] = 4095                                             # marker text
    bm = breast_mask(img)
    assert (bm.method, bm.threshold, bm.chest_wall) == ("flat", 0.0, "R")
    full = bm.full(img)
    assert np.array_equal(full[:, 140:], img[:, 140:] > 0) and not full[:, :140].any()
    geo = plan(img, "mlo", (300, 150), margin=0, crop_margin=0)
    assert geo.flipped and apply(img, geo).max() < 4095  # no marker pixel in the window


@pytest.mark.parametrize("patch", ["rectangle", "saturated disc"])
def test_label_patch_larger_than_the_breast_is_not_the_breast(patch):
    img = np.zeros((400, 300), np.uint16)
    img[150:250, 0:70] = breast_image(100, 70, value=1500)          # chest wall left, ~4 % of the image
    if patch == "rectangle":                                        # a label patch, 11 % of the image
        img[20:140, 150:260] = 2500
        img[60:70, 170:240] = 0                                     # a dark line of text on it
    else:                                                           # a burnt-in saturated disc, 10 %
        yy, xx = np.mgrid[0:400, 0:300]
        img[(yy - 300) ** 2 + (xx - 200) ** 2 <= 62 ** 2] = 4095
    bm = breast_mask(img)
    full = bm.full(img)
    assert np.array_equal(full[:, :80], img[:, :80] > 0) and not full[:, 80:].any()
    assert bm.chest_wall == "L"


@pytest.mark.parametrize("chest", ["L", "R"])
def test_wide_bright_strip_along_a_border(chest):
    # a scanner-lid / film-edge strip 10 % of the width along the right border: apart from the breast (L) or
    # against its chest wall (R)
    img, truth, _ = film_image(chest=chest, band=None, seed=7)
    k = int(0.1 * img.shape[1])
    img[:, -k:] = 240
    truth[:, -k:] = False
    bm = breast_mask(img)
    full = bm.full(img)
    assert bm.chest_wall == chest and not full[:, -k:].any()
    assert (full & truth).sum() / (full | truth).sum() > 0.97
    # digital: a strip a quarter of the width, larger than the breast, is not taken for it
    dig = np.zeros((400, 300), np.uint16)
    dig[150:250, 0:70] = breast_image(100, 70, value=1500)
    dig[:, 225:] = 3000
    assert not breast_mask(dig).full(dig)[:, 200:].any()


def test_strip_bands_known_answer():
    m = np.zeros((100, 60), bool)
    m[:5] = True                     # a 5-row band along the top
    m[5:80, :30] = True              # the breast below it, touching the left edge
    out, depths = strip_bands(m)
    assert depths == {"top": 5, "bottom": 0, "left": 0, "right": 0}
    assert not out[:5].any() and out[5:80, :30].all()
    # a breast filling the left columns is not a band: its coverage does not drop sharply
    _, depths = strip_bands(np.tri(100, 60, 20, dtype=bool)[:, ::-1].T.T)
    assert depths["left"] == 0


def test_chest_wall_from_mask_not_markers():
    m = np.zeros((100, 80), bool)
    m[20:80, 50:] = True             # touches the right edge over 60 rows
    m[5:10, :10] = True              # a marker blob touching the left edge over 5 rows
    assert chest_wall_side(m) == "R"
    m2 = np.zeros((100, 80), bool)   # touching neither edge: the taller side of the breast is the chest wall
    m2[10:90, 10:20] = True
    m2[40:60, 20:60] = True
    assert chest_wall_side(m2) == "L"


def test_tiny_breast_is_dropped_with_a_reason(tmp_path):
    img = np.zeros((200, 160), np.uint16)
    img[100:104, 80:83] = 3000       # 12 bright pixels: 0.04% of the image
    with pytest.raises(PreprocessError, match="breast too small"):
        plan(img, "cc", (64, 48), 0)
    write_png16(tmp_path / "tiny.png", img)
    write_png16(tmp_path / "ok.png", breast_image(90, 70))
    path = _table(tmp_path, [{**BASE, "patient_id": "p1", "cc_path": "tiny.png", "mlo_path": "ok.png"},
                             {**BASE, "patient_id": "p2", "cc_path": "ok.png", "mlo_path": "ok.png"}])
    out, report = preprocess_table(path, tmp_path / "out", Settings((64, 48), (64, 48), 4), progress=False)
    assert list(out["patient_id"]) == ["p2"]
    r = report.set_index("breast_id").loc["p1/e/L"]
    assert r["status"] == "dropped" and "tiny.png" in r["file"] and "minimum breast area" in r["reason"]
    # a lower minimum keeps it
    out, _ = preprocess_table(path, tmp_path / "out2", Settings((64, 48), (64, 48), 4, min_breast_area=0.0001),
                              progress=False)
    assert len(out) == 2


BASE = {"exam_id": "e", "side": "L", "benign": 0, "malignant": 0, "split": "train"}


def _table(tmp_path, rows, name="in.csv"):
    path = tmp_path / name
    exams.write_table(pd.DataFrame(rows), path)
    return path


def _disc(n=200, radius=40):
    yy, xx = np.mgrid[0:n, 0:n]
    return np.where((yy - n / 2) ** 2 + xx ** 2 <= radius ** 2, 3000, 0).astype(np.uint16)  # half disc at x=0


def test_resample_changes_a_disc_by_the_spacing_ratio():
    disc = _disc()
    half = resample(disc, (0.5, 0.5))
    assert half.shape == (100, 100) and half.dtype == np.uint16
    # area of a half disc of radius 40 px -> radius 20 px: pi 20^2 / 2 = 628 px (edge pixels are partial)
    assert (half > 1500).sum() == pytest.approx(np.pi * 20 ** 2 / 2, rel=0.05)
    hm = resample((disc > 0).astype(np.float32), (2.0, 2.0), heatmap=True)
    assert hm.shape == (400, 400) and hm.dtype == np.float32 and hm.max() <= 1.0
    assert parse_spacing("0.07\\0.08") == (0.07, 0.08) and parse_spacing(0.1) == (0.1, 0.1)
    assert parse_spacing(float("nan")) is None and parse_spacing(" ") is None
    with pytest.raises(PreprocessError, match="pixel spacing"):
        parse_spacing("abc")


def test_dicom_spacing_tags(tmp_path):
    from mvmammo.data.dicom import read_pixel_spacing

    assert read_pixel_spacing(write_dicom(tmp_path / "a.dcm", PixelSpacing=[0.07, 0.08],
                                          ImagerPixelSpacing=[0.1, 0.1])) == (0.07, 0.08)
    assert read_pixel_spacing(write_dicom(tmp_path / "b.dcm", ImagerPixelSpacing=[0.1, 0.1])) == (0.1, 0.1)
    assert read_pixel_spacing(write_dicom(tmp_path / "c.dcm")) is None


def test_spacing_from_table_dicom_and_default(tmp_path):
    write_png16(tmp_path / "a.png", _disc())
    write_dicom(tmp_path / "d.dcm", _disc(), side="L", view="CC", PixelSpacing=[0.05, 0.05])
    path = _table(tmp_path, [
        {**BASE, "patient_id": "p1", "cc_path": "a.png", "mlo_path": "a.png", "pixel_spacing": 0.1},
        {**BASE, "patient_id": "p2", "cc_path": "d.dcm", "mlo_path": "a.png", "pixel_spacing": 0.1,
         "mlo_pixel_spacing": 0.2},
        {**BASE, "patient_id": "p3", "cc_path": "a.png", "mlo_path": "a.png", "pixel_spacing": None}])
    s = Settings((120, 100), (120, 100), 0, 0, spacing=0.2)
    out, report = preprocess_table(path, tmp_path / "out", s, progress=False)
    rep = report.set_index("breast_id")
    assert rep.loc["p3/e/L", "status"] == "dropped" and "--source-spacing" in rep.loc["p3/e/L", "reason"]
    t = exams.read_table(tmp_path / "out" / "exams.csv").set_index("patient_id")
    area = {}
    for pid, view in (("p1", "cc"), ("p2", "cc"), ("p2", "mlo")):
        win = read_image(tmp_path / "out" / t.loc[pid, f"{view}_path"])
        area[pid, view] = int((win > 1500).sum())
    full = np.pi * 40 ** 2 / 2           # the half disc at its stored size
    assert area["p1", "cc"] == pytest.approx(full / 4, rel=0.06)    # 0.1 mm (table) -> 0.2 mm: radius / 2
    assert area["p2", "cc"] == pytest.approx(full / 16, rel=0.1)    # 0.05 mm (DICOM tag) -> 0.2: radius / 4
    assert area["p2", "mlo"] == pytest.approx(full, rel=0.03)       # per-view column 0.2 mm: unchanged
    assert (rep.loc["p2/e/L", "cc_spacing_source"], rep.loc["p2/e/L", "mlo_spacing_source"]) == ("dicom", "table")
    assert rep.loc["p2/e/L", "cc_scale"] == pytest.approx(0.25)
    # --source-spacing rescues the breast without any spacing
    out, report = preprocess_table(path, tmp_path / "out2", Settings((120, 100), (120, 100), 0, 0, spacing=0.2,
                                                                     source_spacing=0.1), progress=False)
    assert len(out) == 3 and (report["status"] == "kept").all()


def test_report_records_threshold_shares_side_and_warnings(tmp_path, capsys):
    img, truth, _ = film_image(chest="R", band="right", seed=1)
    write_png16(tmp_path / "film.png", img)
    write_png16(tmp_path / "small.png", np.pad(breast_image(60, 40), ((40, 40), (0, 100))))
    path = _table(tmp_path, [{**BASE, "patient_id": "p1", "side": "R", "cc_path": "film.png", "mlo_path": "small.png"}])
    assert main(["preprocess", str(path), "--out", str(tmp_path / "w"), "--window-cc", "200", "150",
                 "--window-mlo", "400", "300", "--margin", "0", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning: 1 breasts: breast cut by the window" in err and "fills < 20% of the window" in err
    r = pd.read_csv(tmp_path / "w" / "preprocess_report.csv").iloc[0]
    assert r["status"] == "kept" and r["cc_threshold_method"] == "otsu-background"
    assert 40 <= r["cc_threshold"] <= 120 and r["mlo_threshold"] == 0
    assert (r["cc_chest_wall"], r["cc_flipped"], r["mlo_chest_wall"], r["mlo_flipped"]) == ("R", 1, "L", 0)
    assert r["cc_breast_share_image"] == pytest.approx(truth.mean(), abs=0.02)
    # the CC window (200 x 150) is smaller than the breast (288 x 176): pinned to the nipple side, it is mostly breast
    assert r["cc_breast_share_window"] > 0.6 and r["cc_breast_outside_window"] > 0.3
    assert "cc: breast cut by the window" in r["warning"]
    assert r["mlo_breast_share_window"] < 0.2 and "mlo: breast fills" in r["warning"]


def test_one_view_breast_needs_the_flag(tmp_path):
    write_png16(tmp_path / "cc.png", breast_image(90, 70))
    path = _table(tmp_path, [{**BASE, "patient_id": "p1", "cc_path": "cc.png", "mlo_path": ""},
                             {**BASE, "patient_id": "p2", "cc_path": "cc.png", "mlo_path": "cc.png"}])
    with pytest.raises(exams.TableError, match="mlo_path"):
        preprocess_table(path, tmp_path / "out", Settings((64, 48), (64, 48), 4), progress=False)
    out, report = preprocess_table(path, tmp_path / "out", Settings((64, 48), (64, 48), 4, allow_missing_view=True),
                                   progress=False)
    assert len(out) == 2 and (report["status"] == "kept").all()
    one = out.set_index("patient_id").loc["p1"]
    assert one["cc_path"].startswith("images/") and (pd.isna(one["mlo_path"]) or not str(one["mlo_path"]).strip())
    assert "one-view" in report.set_index("breast_id").loc["p1/e/L", "warning"]
    assert main(["preprocess", str(path), "--out", str(tmp_path / "cli"), "--window-cc", "64", "48",
                 "--window-mlo", "64", "48", "--no-progress"]) == 1
    assert main(["preprocess", str(path), "--out", str(tmp_path / "cli"), "--window-cc", "64", "48",
                 "--window-mlo", "64", "48", "--no-progress", "--allow-missing-view"]) == 0


def test_cli_rejects_bad_values(tmp_path):
    for bad in (["--background", "otsu"], ["--spacing", "-1"], ["--min-breast-area", "2"]):
        with pytest.raises(SystemExit) as exc:
            main(["preprocess", "t.csv", "--out", str(tmp_path / "o"), *bad])
        assert exc.value.code == 2
