"""Heatmaps: the grid rule, averaging on hand-computed grids, fast path == per-patch loop, the table command."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch


pytestmark = pytest.mark.usefixtures("one_thread")

from mvmammo.heatmaps.grid import average, average_loop, average_numpy, grid, starts
from mvmammo.heatmaps.infer import image_heatmaps, image_heatmaps_loop
from mvmammo.models.densenet import DenseNet, DenseNetConfig
from mvmammo.patches.runs import write_model

TINY = DenseNetConfig(growth=4, blocks=(1, 1), init_features=8, bn_size=2)


def tiny_model(seed: int = 0) -> DenseNet:
    torch.manual_seed(seed)
    m = DenseNet(TINY)
    # Non-trivial BN statistics, so eval mode is not an identity and differences would show.
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


def test_starts_follow_the_grid_rule():
    assert starts(10, 4, 3).tolist() == [0, 3, 6]          # 6 + 4 = 10: already flush
    assert starts(11, 4, 3).tolist() == [0, 3, 6, 7]       # one extra start, flush with the border
    assert starts(4, 4, 3).tolist() == [0]
    assert starts(3, 4, 3).tolist() == [0]                 # shorter than a patch: one (padded) patch
    # NYU's full-size CC crop: 2677 rows at 256/70 -> 36 starts, the last at 2421
    s = starts(2677, 256, 70)
    assert len(s) == 36 and s[-1] == 2677 - 256 and s[-2] == 34 * 70


def test_average_on_a_hand_computed_1d_grid():
    # shape (3, 5), patch 3, stride 2: one row start (0), column starts 0 and 2.
    rows, cols = grid((3, 5), 3, 2)
    assert rows.tolist() == [0] and cols.tolist() == [0, 2]
    probs = torch.tensor([[[0.2], [0.8]]])                 # (ny=1, nx=2, C=1)
    out = average(probs, rows, cols, 3, (3, 5))[0]
    expected = np.array([0.2, 0.2, 0.5, 0.8, 0.8], np.float32)   # x=2 is covered by both patches
    np.testing.assert_allclose(out.numpy(), np.tile(expected, (3, 1)), rtol=0, atol=1e-7)


def test_average_on_a_hand_computed_2d_grid():
    # shape (4, 4), patch 3, stride 1: starts (0, 1) on both axes; probs a b / c d.
    rows, cols = grid((4, 4), 3, 1)
    a, b, c, d = 0.1, 0.3, 0.5, 0.9
    probs = torch.tensor([[[a], [b]], [[c], [d]]])
    out = average(probs, rows, cols, 3, (4, 4))[0].numpy()
    assert out[0, 0] == pytest.approx(a)
    assert out[0, 1] == pytest.approx((a + b) / 2)
    assert out[1, 0] == pytest.approx((a + c) / 2)
    assert out[1, 1] == pytest.approx((a + b + c + d) / 4)
    assert out[3, 3] == pytest.approx(d)
    assert out[3, 0] == pytest.approx(c)
    np.testing.assert_allclose(out, average_loop(probs.numpy(), rows, cols, 3, (4, 4))[0], atol=1e-7)


def test_average_matches_the_loop_on_random_grids():
    rng = np.random.default_rng(0)
    for shape, patch, stride in (((50, 37), 16, 7), ((16, 40), 16, 5), ((23, 23), 8, 8)):
        rows, cols = grid(shape, patch, stride)
        probs = rng.uniform(size=(len(rows), len(cols), 4)).astype(np.float32)
        fast = average(torch.from_numpy(probs), rows, cols, patch, shape).numpy()
        np.testing.assert_allclose(fast, average_loop(probs, rows, cols, patch, shape), atol=1e-6)
        np.testing.assert_array_equal(average_numpy(probs, rows, cols, patch, shape), fast)   # the host renderer


def _breast_image(h=120, w=90, seed=0) -> np.ndarray:
    """A half-disk of textured 'tissue' on a zero background, chest wall at column 0."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    inside = (yy - h / 2) ** 2 / (0.45 * h) ** 2 + xx ** 2 / (0.9 * w) ** 2 < 1
    img = np.where(inside, 800 + 300 * rng.uniform(size=(h, w)), 0)
    return img.astype(np.uint16)


def test_fast_path_equals_the_per_patch_loop():
    model = tiny_model()
    img = _breast_image()
    fast = image_heatmaps(model, img, patch=32, stride=10, batch_size=7)   # batches that split grid rows
    slow = image_heatmaps_loop(model, img, patch=32, stride=10)
    assert fast.patches == slow.patches > 20
    np.testing.assert_allclose(fast.probs, slow.probs, atol=1e-5)
    np.testing.assert_allclose(fast.benign, slow.benign, atol=1e-5)
    np.testing.assert_allclose(fast.malignant, slow.malignant, atol=1e-5)
    assert fast.benign.shape == img.shape
    y0, x0, y1, x1 = fast.box
    assert (fast.benign[:y0] == 0).all() and (fast.malignant[:, x1:] == 0).all()   # background outside the box
    assert fast.malignant[y0:y1, x0:x1].min() > 0


def _tiny_table(tmp_path, n=3, h=120, w=90) -> Path:
    from mvmammo.data.images import write_png16

    (tmp_path / "img").mkdir()
    rows = []
    for i in range(n):
        for v in ("cc", "mlo"):
            write_png16(tmp_path / "img" / f"{i}_{v}.png", _breast_image(h, w, seed=2 * i + (v == "mlo")))
        rows.append({"patient_id": f"P{i}", "exam_id": f"E{i}", "side": "L", "cc_path": f"img/{i}_cc.png",
                     "mlo_path": f"img/{i}_mlo.png", "benign": 0, "malignant": int(i == 0),
                     "split": ["train", "val", "test"][i % 3]})
    path = tmp_path / "exams.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path





def test_heatmaps_command_writes_a_table_the_readers_accept_and_resumes(tmp_path, capsys):
    from mvmammo.cli import main
    from mvmammo.data import exams, images

    table = _tiny_table(tmp_path)
    write_model(tmp_path / "patch_run", tiny_model(), patch=32)
    out = tmp_path / "hm"
    argv = ["heatmaps", str(table), "--patch-model", str(tmp_path / "patch_run"), "--out", str(out),
            "--stride", "10", "--quiet"]
    assert main(argv) == 0
    assert "6 images done" in capsys.readouterr().out
    df = exams.load_valid(out / "exams.csv")                      # paths resolve from the new folder
    for col in exams.HEATMAP_COLUMNS:
        hm = images.read_heatmap(exams.resolve_path(df, df.loc[0, col]))
        img = images.read_image(exams.resolve_path(df, df.loc[0, col.split("_")[0] + "_path"]))
        assert hm.shape == img.shape and 0 < hm.max() <= 1
    # The stored map is the computed one to 16-bit precision.
    res = image_heatmaps(tiny_model(), images.read_image(tmp_path / "img" / "0_cc.png"), 32, 10)
    stored = images.read_heatmap(exams.resolve_path(df, df.loc[0, "cc_heatmap_malignant"]))
    np.testing.assert_allclose(stored, res.malignant, atol=1 / 65535 + 1e-6)
    assert json.loads((out / "heatmaps.json").read_text())["stride"] == 10
    # Resume: everything is there, nothing is recomputed.
    assert main(argv) == 0
    assert "0 images done, 6 already there" in capsys.readouterr().out
    # Other settings in the same folder are refused in one line.
    assert main(argv[:-3] + ["--stride", "12", "--quiet"]) == 1
    assert "other settings" in capsys.readouterr().err


def test_heatmaps_table_feeds_the_cache(tmp_path):
    from mvmammo.data import exams
    from mvmammo.data.cache import build_cache
    from mvmammo.heatmaps.table import make_heatmaps

    table = _tiny_table(tmp_path)
    write_model(tmp_path / "run", tiny_model(), patch=32)
    s = make_heatmaps(table, tmp_path / "run", tmp_path / "hm", stride=16, progress=False)
    df = exams.load_valid(s["table"])
    cache = build_cache(df, tmp_path / "cache", (64, 48), (64, 48), True, 0.0)
    assert cache.spec.channels == 3 and len(cache) == 3


def _heatmap_run_and_raw_table(tmp_path):
    """A Joint run trained with heatmap channels, a raw table of 4 breasts (no labels, split or heatmaps) and a
    tiny patch classifier."""
    from conftest import tiny_overrides

    from mvmammo.config import resolve
    from mvmammo.data.synthetic import generate_cohort
    from mvmammo.training.loop import train

    generate_cohort(tmp_path / "cohort", preset="balanced", breasts=24, size_cc=(64, 48), size_mlo=(64, 48),
                    seed=5, heatmaps=True, progress=False, workers=1)
    table = tmp_path / "cohort" / "exams.csv"
    train(resolve("default", tiny_overrides(table, tmp_path / "heat", **{"optim.epochs": 1, "run.max_steps": 2,
                                                                         "model.family": "joint"})))
    raw = pd.read_csv(table, dtype={"patient_id": str, "exam_id": str}).head(4)
    raw = raw[["patient_id", "exam_id", "side", "cc_path", "mlo_path"]]
    raw.to_csv(tmp_path / "cohort" / "raw.csv", index=False)
    write_model(tmp_path / "patch_run", tiny_model(), patch=32)


def test_predict_with_a_heatmap_model_on_a_raw_table_after_heatmaps(tmp_path, capsys):
    """Raw table (no labels, no split, no heatmaps) -> `mvmammo heatmaps` -> `mvmammo predict` of a model
    trained with heatmap channels; and the same in one step with `predict --patch-model`."""
    from mvmammo.cli import main

    _heatmap_run_and_raw_table(tmp_path)
    assert main(["heatmaps", str(tmp_path / "cohort" / "raw.csv"), "--patch-model", str(tmp_path / "patch_run"),
                 "--out", str(tmp_path / "hm"), "--stride", "9", "--quiet"]) == 0
    rc = main(["predict", str(tmp_path / "heat"), "--table", str(tmp_path / "hm" / "raw.csv"),
               "--out", str(tmp_path / "pred.csv"), "--tta", "1", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    res = pd.read_csv(tmp_path / "pred.csv")
    assert len(res) == 4 and res["p_malignant"].between(0, 1).all() and (res["views"] == "cc+mlo").all()
    # Without heatmaps and without --patch-model: one line saying how to get them.
    raw_args = ["predict", str(tmp_path / "heat"), "--table", str(tmp_path / "cohort" / "raw.csv"), "--tta", "1",
                "--no-progress"]
    assert main(raw_args + ["--out", str(tmp_path / "none.csv")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--patch-model" in err[0]
    # One step: the heatmaps made on the way give the two-step path's predictions exactly.
    assert main(raw_args + ["--out", str(tmp_path / "one.csv"), "--patch-model", str(tmp_path / "patch_run"),
                            "--heatmap-stride", "9"]) == 0
    one = pd.read_csv(tmp_path / "one.csv")
    pd.testing.assert_frame_equal(one[["breast_id", "p_benign", "p_malignant", "views"]],
                                  res[["breast_id", "p_benign", "p_malignant", "views"]])
    made = list((tmp_path / "one_work").glob("heatmaps-*/maps/*_grid.npz"))
    assert len(made) == 8
    # A rerun finds the maps already made.
    assert main(raw_args + ["--out", str(tmp_path / "one.csv"), "--patch-model", str(tmp_path / "patch_run"),
                            "--heatmap-stride", "9"]) == 0


def test_chain_pixel_auc_on_hand_made_maps(tmp_path):
    """The chain experiment's pixel-level AUC: a map that is the lesion disk scores 1, its inverse 0."""
    from mvmammo import experiments
    from mvmammo.data.images import write_heatmap_png
    from mvmammo.experiments.heatmaps import pixel_aucs

    assert experiments.get("heatmaps").prepare is not None
    h, w = 40, 30
    yy, xx = np.mgrid[:h, :w]
    disk = ((yy - 20) ** 2 + (xx - 12) ** 2 <= 5 ** 2).astype(np.float32)
    (tmp_path / "img").mkdir()
    from mvmammo.data.images import write_png16

    write_png16(tmp_path / "img" / "cc.png", np.full((h, w), 500, np.uint16))
    write_png16(tmp_path / "img" / "mlo.png", np.full((h, w), 500, np.uint16))
    write_heatmap_png(tmp_path / "img" / "m.png", disk)          # malignant map = the lesion
    write_heatmap_png(tmp_path / "img" / "b.png", 1 - disk)      # benign map = its inverse
    row = {"patient_id": "P0", "exam_id": "E0", "side": "L", "cc_path": "img/cc.png", "mlo_path": "img/mlo.png",
           "benign": 1, "malignant": 1, "split": "test", "cc_heatmap_malignant": "img/m.png",
           "cc_heatmap_benign": "img/b.png", "mlo_heatmap_malignant": "img/m.png", "mlo_heatmap_benign": "img/b.png"}
    pd.DataFrame([row]).to_csv(tmp_path / "exams.csv", index=False)
    les = {"patient_id": "P0", "side": "L", "split": "test", "cc_row": 20, "cc_col": 12, "cc_radius_px": 5,
           "cc_visible": 1, "mlo_row": 20, "mlo_col": 12, "mlo_radius_px": 5, "mlo_visible": 1}
    pd.DataFrame([{**les, "cls": "malignant"}, {**les, "cls": "benign"}]).to_csv(tmp_path / "lesions.csv", index=False)
    res = pixel_aucs(tmp_path / "exams.csv", tmp_path / "lesions.csv", step=1)
    assert res["malignant"] == pytest.approx(1.0) and res["benign"] == pytest.approx(0.0)


def test_heatmaps_errors_are_one_line(tmp_path, capsys):
    from mvmammo.cli import main

    table = _tiny_table(tmp_path, n=1)
    (tmp_path / "empty_run").mkdir()
    for run in ("missing_run", "empty_run"):
        rc = main(["heatmaps", str(table), "--patch-model", str(tmp_path / run), "--out", str(tmp_path / "hm"),
                   "--quiet"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 1 and len(err) == 1 and err[0].startswith("error: ") and run in err[0]
    # A two-view run folder is not a patch classifier: said in one line, naming the checkpoint.
    from mvmammo.training.checkpoint import save_atomic

    save_atomic({"model": {"w": torch.zeros(1)}}, tmp_path / "empty_run" / "best.pt")
    assert main(["heatmaps", str(table), "--patch-model", str(tmp_path / "empty_run"), "--out",
                 str(tmp_path / "hm"), "--quiet"]) == 1
    assert "not a patch classifier" in capsys.readouterr().err


def test_evaluate_an_external_table_without_heatmaps_with_patch_model(tmp_path, capsys):
    """External validation of a heatmap run on a labelled table without heatmaps: --patch-model makes them."""
    from mvmammo.cli import main

    _heatmap_run_and_raw_table(tmp_path)
    table = pd.read_csv(tmp_path / "cohort" / "exams.csv", dtype={"patient_id": str, "exam_id": str}).head(8)
    table = table[["patient_id", "exam_id", "side", "cc_path", "mlo_path", "benign", "malignant"]]
    table["malignant"] = [0, 1] * 4                      # both classes present: an AUC exists
    table.to_csv(tmp_path / "cohort" / "ext.csv", index=False)
    base = ["evaluate", str(tmp_path / "heat"), "--table", str(tmp_path / "cohort" / "ext.csv"), "--tta", "1"]
    assert main(base) == 1
    assert "--patch-model" in capsys.readouterr().err
    assert main(base + ["--patch-model", str(tmp_path / "patch_run"), "--heatmap-stride", "9"]) == 0
    out = capsys.readouterr().out
    assert "malignant: AUC" in out and "external-ext" in out
    metrics = json.loads((tmp_path / "heat" / "metrics_external-ext.json").read_text())
    assert metrics["table"] == str(tmp_path / "cohort" / "ext.csv") and metrics["breasts"] == 8
    assert main(["evaluate", str(tmp_path / "heat"), "--patch-model", str(tmp_path / "patch_run")]) == 2
