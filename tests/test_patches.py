"""Patch sets: class rules, CBIS-style masks, VinDr-style boxes, the synthetic cohort; the patch classifier."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch


pytestmark = pytest.mark.usefixtures("one_thread")

from mvmammo.data.images import write_png16
from mvmammo.patches.extract import BENIGN, MALIGNANT, NEGATIVE, OUTSIDE, PatchConfig, image_patches
from mvmammo.patches.store import extract_patches, load_split

H, W, P = 160, 120, 32


def tissue(h=H, w=W, value=1000) -> np.ndarray:
    """A half-ellipse 'breast' (chest wall at column 0, 100 px deep) on a zero background, with texture."""
    yy, xx = np.mgrid[:h, :w]
    inside = ((yy - h / 2) / (0.47 * h)) ** 2 + (xx / 100) ** 2 < 1
    img = np.where(inside, value + 50 * (yy % 2), 0)
    return img.astype(np.uint16)


def box_mask(y0, x0, y1, x1, h=H, w=W) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_class_rules_on_one_image():
    img = tissue()
    mal, ben = box_mask(40, 40, 50, 50), box_mask(100, 30, 110, 40)
    cfg = PatchConfig(patch=P, per_lesion=5, jitter=0.25, per_image=6, crop_margin=0)
    x, y, where = image_patches(img, [("malignant", mal), ("benign", ben)], True, cfg, np.random.default_rng(0))
    assert x.shape[1:] == (P, P) and x.dtype == np.float16
    for lab, (r, c) in zip(y, where):
        cover = lambda m: m[r:r + P, c:c + P].any()  # noqa: E731
        if lab == MALIGNANT:
            assert cover(mal)
        elif lab == BENIGN:
            assert cover(ben) and not cover(mal)
        else:
            assert lab == OUTSIDE and not cover(mal) and not cover(ben)
        assert (img[r:r + P, c:c + P] > 0).mean() >= 0.5 or lab in (MALIGNANT, BENIGN)  # tissue, not background
    assert (y == MALIGNANT).sum() == 5 and (y == BENIGN).sum() == 5 and (y == OUTSIDE).sum() == 6
    # Positives are centred on their lesion up to the jitter (0.25 x 32 = 8 px per axis).
    centres = where[y == MALIGNANT] + P / 2
    assert np.abs(centres - [45, 45]).max() <= 8 + 1
    # A breast without biopsy gives negative patches only; a lesion right next to a malignant one is malignant.
    x2, y2, _ = image_patches(img, [], False, cfg, np.random.default_rng(1))
    assert set(y2.tolist()) == {NEGATIVE} and len(y2) == 6
    near = box_mask(52, 40, 60, 48)   # benign, 2 px below the malignant lesion
    _, y3, _ = image_patches(img, [("malignant", mal), ("benign", near)], True,
                             replace(cfg, per_image=0), np.random.default_rng(2))
    assert (y3 == MALIGNANT).all()


def test_background_patches_are_skipped():
    img = np.zeros((H, W), np.uint16)
    img[:, :10] = 1000          # a 10-px sliver of tissue: every 32-px patch is mostly background
    img[::2, :10] += 50
    cfg = PatchConfig(patch=P, per_image=5, min_tissue=0.5, crop_margin=0, tries=20)
    x, y, _ = image_patches(img, [], False, cfg, np.random.default_rng(0))
    assert len(y) == 0


def _fixture_table(tmp_path: Path, labels) -> Path:
    (tmp_path / "img").mkdir(exist_ok=True)
    rows = []
    for i, (ben, mal) in enumerate(labels):
        for v in ("cc", "mlo"):
            write_png16(tmp_path / "img" / f"{i}_{v}.png", tissue(value=900 + 10 * i))
        rows.append({"patient_id": f"P{i}", "exam_id": f"P{i}", "side": "R", "cc_path": f"img/{i}_cc.png",
                     "mlo_path": f"img/{i}_mlo.png", "benign": ben, "malignant": mal,
                     "split": ("train", "val", "test")[i % 3]})
    pd.DataFrame(rows).to_csv(tmp_path / "exams.csv", index=False)
    return tmp_path / "exams.csv"


def test_cbis_style_roi_masks(tmp_path):
    from PIL import Image

    table = _fixture_table(tmp_path, [(0, 1), (1, 0), (0, 0)])
    (tmp_path / "masks").mkdir()
    Image.fromarray((box_mask(60, 50, 76, 70) * 255).astype(np.uint8)).save(tmp_path / "masks" / "m0.png")
    Image.fromarray((box_mask(20, 20, 30, 30) * 255).astype(np.uint8)).save(tmp_path / "masks" / "m1.png")
    # CBIS description CSV: its own column names (spaces), pathology words, ROI mask paths.
    pd.DataFrame({"patient_id": ["P0", "P1"], "breast_density": [2, 3], "left or right breast": ["RIGHT", "RIGHT"],
                  "image view": ["CC", "MLO"], "abnormality id": [1, 1], "abnormality type": ["mass", "calcification"],
                  "pathology": ["MALIGNANT", "BENIGN_WITHOUT_CALLBACK"],
                  "image file path": ["x", "y"], "cropped image file path": ["x", "y"],
                  "ROI mask file path": ["masks/m0.png", "masks/m1.png"]}).to_csv(tmp_path / "cbis.csv", index=False)
    cfg = PatchConfig(patch=P, per_lesion=3, per_image=2)
    s = extract_patches(table, tmp_path / "ps", tmp_path / "cbis.csv", cfg=cfg, progress=False)
    index = pd.read_csv(tmp_path / "ps" / "index.csv", dtype={"patient_id": str})
    pos = index[index["cls"].isin(["malignant", "benign"])]
    assert set(zip(pos["patient_id"], pos["view"], pos["cls"])) == {("P0", "cc", "malignant"),
                                                                   ("P1", "mlo", "benign")}
    # Biopsied breasts give outside patches (P0, P1), the breast without biopsy negative ones (P2).
    assert set(index.loc[index["cls"] == "outside", "patient_id"]) == {"P0", "P1"}
    assert set(index.loc[index["cls"] == "negative", "patient_id"]) == {"P2"}
    assert s["counts"]["train"] == {"malignant": 3, "benign": 0, "outside": 4, "negative": 0}
    x, y = load_split(tmp_path / "ps", "val")
    assert x.shape == (3 + 4, P, P) and (y == BENIGN).sum() == 3
    # Same settings again: nothing is redone.
    assert extract_patches(table, tmp_path / "ps", tmp_path / "cbis.csv", cfg=cfg, progress=False)["cached"]


def test_vindr_style_boxes(tmp_path):
    table = _fixture_table(tmp_path, [(0, 1), (1, 0), (0, 0)])
    pd.DataFrame({"study_id": ["P0", "P1", "P1", "P2"], "image_id": ["a", "b", "c", "d"],
                  "laterality": ["R", "R", "R", "R"], "view_position": ["MLO", "CC", "CC", "CC"],
                  "finding_categories": ["['Mass']", "['Mass']", "['Asymmetry']", "['No Finding']"],
                  "finding_birads": ["BI-RADS 5", "BI-RADS 2", "BI-RADS 3", None],
                  "xmin": [40.0, 10.0, 60.0, None], "ymin": [90.0, 10.0, 60.0, None],
                  "xmax": [60.0, 25.0, 70.0, None], "ymax": [110.0, 25.0, 70.0, None]}
                 ).to_csv(tmp_path / "finding_annotations.csv", index=False)
    cfg = PatchConfig(patch=P, per_lesion=2, per_image=1, crop_margin=0)
    s = extract_patches(table, tmp_path / "ps", tmp_path / "finding_annotations.csv", cfg=cfg, progress=False)
    index = pd.read_csv(tmp_path / "ps" / "index.csv", dtype={"patient_id": str})
    pos = index[index["cls"].isin(["malignant", "benign"])]
    # BI-RADS 5 -> malignant, 2 -> benign, 3 and "No Finding" are not lesions of either class.
    assert sorted(zip(pos["patient_id"], pos["view"], pos["cls"])) == [("P0", "mlo", "malignant")] * 2 + \
        [("P1", "cc", "benign")] * 2
    mal = pos[pos["cls"] == "malignant"]
    assert ((mal["y"] < 110) & (mal["y"] + P > 90) & (mal["x"] < 60) & (mal["x"] + P > 40)).all()
    assert sum(sum(c.values()) for c in s["counts"].values()) == len(index)


def _synthetic(tmp_path, breasts=48, size=(192, 144)):
    from mvmammo.data.synthetic import generate_cohort, get_preset

    pre = replace(get_preset("balanced"), p_malignant=0.5, p_benign=0.3)
    generate_cohort(tmp_path / "synth", preset=pre, breasts=breasts, size_cc=size, size_mlo=size, seed=3,
                    heatmaps=False, workers=1, progress=False)
    return tmp_path / "synth" / "exams.csv"


def test_synthetic_lesions_command_reports_counts_and_follows_splits(tmp_path, capsys):
    from mvmammo.cli import main

    table = _synthetic(tmp_path, breasts=12, size=(128, 96))
    assert main(["patches", "extract", str(table), "--out", str(tmp_path / "ps"), "--patch", "32", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "malignant" in out
    index = pd.read_csv(tmp_path / "ps" / "index.csv", dtype={"patient_id": str})
    exams_df = pd.read_csv(table, dtype={"patient_id": str})
    split_of = dict(zip(exams_df["patient_id"], exams_df["split"]))
    assert (index["patient_id"].map(split_of) == index["split"]).all()
    lesions = pd.read_csv(tmp_path / "synth" / "lesions.csv")
    n_visible = int(lesions["cc_visible"].sum() + lesions["mlo_visible"].sum())
    n_pos = int(index["cls"].isin(["malignant", "benign"]).sum())
    assert 0 < n_pos <= 4 * n_visible
    meta = json.loads((tmp_path / "ps" / "patches.json").read_text())
    assert sum(sum(c.values()) for c in meta["counts"].values()) == len(index)


def test_tiny_classifier_heatmaps_are_higher_on_lesions(tmp_path):
    from mvmammo.heatmaps.infer import image_heatmaps, load_patch_model
    from mvmammo.data import exams, images
    from mvmammo.patches.train import PatchTrainConfig, train_patches

    table = _synthetic(tmp_path)
    extract_patches(table, tmp_path / "ps", cfg=PatchConfig(patch=P, per_lesion=6, per_image=3), progress=False)
    cfg = PatchTrainConfig(patches=str(tmp_path / "ps"), out=str(tmp_path / "run"), growth=8, blocks=(2, 2),
                           init_features=16, bn_size=2, epochs=6, batch_size=32, lr=3e-3)
    res = train_patches(cfg, progress=False)
    assert res["last"]["val_auc_malignant"] > 0.7
    model, info = load_patch_model(tmp_path / "run")
    assert info["patch"] == P
    df = exams.read_table(table)
    lesions = pd.read_csv(tmp_path / "synth" / "lesions.csv", dtype={"patient_id": str})
    on, off = [], []
    for _, les in lesions[(lesions["split"] == "test") & (lesions["cc_visible"] == 1)].iterrows():
        row = df[(df["patient_id"] == les["patient_id"]) & (df["side"] == les["side"])].iloc[0]
        img = images.read_image(exams.resolve_path(df, row["cc_path"]))
        hm = image_heatmaps(model, img, P, 8)
        lesion_map = hm.malignant + hm.benign
        yy, xx = np.ogrid[:img.shape[0], :img.shape[1]]
        d2 = (yy - les["cc_row"]) ** 2 + (xx - les["cc_col"]) ** 2
        tissue_px = (img > 0) & (d2 > (3 * les["cc_radius_px"] + P) ** 2)
        on.append(lesion_map[d2 <= les["cc_radius_px"] ** 2].mean())
        off.append(lesion_map[tissue_px].mean())
    assert len(on) >= 3
    assert np.mean(on) > np.mean(off) + 0.1


def test_patch_training_resumes_exactly(tmp_path, capsys):
    from mvmammo.cli import main
    from mvmammo.runlog import records
    from mvmammo.training.checkpoint import load

    table = _fixture_table(tmp_path, [(0, 1), (1, 0), (0, 0), (1, 1), (0, 0), (0, 1)])
    pd.DataFrame({"patient_id": ["P0", "P3", "P4", "P5", "P1"], "exam_id": ["P0", "P3", "P4", "P5", "P1"],
                  "side": "R", "view": "cc", "cls": ["malignant", "malignant", "benign", "malignant", "benign"],
                  "row": [50, 60, 80, 100, 70], "col": [50, 40, 60, 50, 45], "radius_px": 6}
                 ).to_csv(tmp_path / "ann.csv", index=False)
    main(["patches", "extract", str(table), "--out", str(tmp_path / "ps"), "--annotations", str(tmp_path / "ann.csv"),
          "--patch", "32", "--quiet"])
    base = ["patches", "train", str(tmp_path / "ps"), "--growth", "4", "--blocks", "1", "1", "--init-features", "8",
            "--batch-size", "8", "--quiet"]
    assert main(base + ["--out", str(tmp_path / "a"), "--epochs", "3"]) == 0
    assert main(base + ["--out", str(tmp_path / "b"), "--epochs", "1"]) == 0
    assert main(base + ["--out", str(tmp_path / "b"), "--epochs", "3"]) == 0      # resume from last.pt
    a, b = load(tmp_path / "a" / "last.pt")["model"], load(tmp_path / "b" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = records(tmp_path / "a" / "metrics.jsonl"), records(tmp_path / "b" / "metrics.jsonl")
    assert [r["epoch"] for r in rb] == [0, 1, 2]
    assert [r["train_loss"] for r in ra] == [r["train_loss"] for r in rb]
    assert {"val_auc_malignant", "val_auc_benign", "val_auc_outside", "val_auc_negative"} <= set(ra[-1])
    # Other settings in the same run folder are refused (one line, exit 1).
    assert main(base[:-1] + ["--lr", "0.1", "--out", str(tmp_path / "a"), "--quiet"]) == 1
    assert "other settings" in capsys.readouterr().err
