"""`mvmammo predict` and `evaluate --table`: one-view breasts read by the family's single-view path, the
ensemble of runs, the output table, external validation, and one-line errors for unusable run folders."""
import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mvmammo.cli import main
from mvmammo.config import ModelConfig, resolve
from mvmammo.evaluation.apply import ensemble_frames, predict_table
from mvmammo.evaluation.evaluate import evaluate_run
from mvmammo.evaluation.loading import RunError
from mvmammo.evaluation.predict import combine, predict_outputs
from mvmammo.models.registry import build_model

from conftest import tiny_overrides

H, W = 64, 48


def tiny_model(family: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(family=family, width=4, fc_dim=8), in_channels=1).eval()


# ---- one-view breasts: the family's single-view path -------------------------------------------------

@pytest.mark.parametrize("family", ["joint", "shared"])
@torch.no_grad()
def test_masked_view_equals_that_view_alone(family):
    model = tiny_model(family)
    cc, mlo = torch.randn(3, 1, H, W), torch.randn(3, 1, H, W)
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # CC only, MLO only, both
    out = model(cc, mlo, view_mask=mask)
    enc = model.encode(cc, mlo)
    zero = torch.zeros_like(enc["h_cc"])
    cc_alone = model.fuse(h_cc=enc["h_cc"], h_mlo=zero)["logits"]
    mlo_alone = model.fuse(h_cc=zero, h_mlo=enc["h_mlo"])["logits"]
    torch.testing.assert_close(out["logits"][0], cc_alone[0])
    torch.testing.assert_close(out["logits"][1], mlo_alone[1])
    torch.testing.assert_close(out["logits"][2], model(cc, mlo)["logits"][2])
    # closed form of sum fusion with a zero MLO feature: W h_cc + b
    head = model.shared["head"]
    torch.testing.assert_close(out["logits"][0], enc["h_cc"][0] @ head.weight.T + head.bias)
    # what the masked view's pixels hold does not matter
    torch.testing.assert_close(model(cc, mlo * 7 + 3, view_mask=mask)["logits"][0], out["logits"][0])


@torch.no_grad()
def test_split_one_view_uses_that_views_model_and_uni_gives_nan():
    model = tiny_model("split")
    cc, mlo = torch.randn(3, 1, H, W), torch.randn(3, 1, H, W)
    present = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    out = model(cc, mlo, view_mask=present)
    p = combine(model, out, present)
    enc = model.encode(cc, mlo)
    torch.testing.assert_close(p[0], torch.sigmoid(model.cc["head"](enc["h_cc"][0])))
    torch.testing.assert_close(p[1], torch.sigmoid(model.mlo["head"](enc["h_mlo"][1])))
    both = (torch.sigmoid(model.cc["head"](enc["h_cc"][2])) + torch.sigmoid(model.mlo["head"](enc["h_mlo"][2]))) / 2
    torch.testing.assert_close(p[2], both)
    uni = tiny_model("uni_cc")
    pu = combine(uni, uni(cc, mlo, view_mask=present), present)
    assert torch.isnan(pu[1]).all() and not torch.isnan(pu[[0, 2]]).any()


class _Cache:
    def __init__(self, present):
        self._present = np.asarray(present, bool)

    def present(self, rows):
        return self._present[rows]


class _Maker:
    """The BatchMaker interface predict_outputs uses, over fixed random windows (no cache on disk)."""

    def __init__(self, present, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.cache, self.device = _Cache(present), torch.device("cpu")
        self.views = {v: torch.randn(len(present), 1, H, W, generator=g) for v in ("cc", "mlo")}

    def loaded(self, chunks):
        for rows in chunks:
            yield rows, {v: x[rows] for v, x in self.views.items()}, torch.zeros(len(rows), 2, dtype=torch.long)

    def assemble(self, rows, raw, labels, train, generator=None):
        return {"cc": raw["cc"], "mlo": raw["mlo"]}


@torch.no_grad()
def test_predict_outputs_masks_one_view_rows_and_keeps_two_view_rows_exact():
    model = tiny_model("joint")
    present = [[1, 1], [1, 0], [0, 1], [1, 1], [1, 1]]
    maker = _Maker(present)
    got = predict_outputs(model, maker, np.arange(5), tta=0, batch_size=2)
    mask = torch.tensor(present, dtype=torch.float32)
    want = torch.sigmoid(model(maker.views["cc"], maker.views["mlo"], view_mask=mask)["logits"]).double().numpy()
    np.testing.assert_allclose(got["p"][0], want, rtol=1e-5, atol=1e-6)
    # rows with both views: identical to the unmasked forward pass
    plain = torch.sigmoid(model(maker.views["cc"], maker.views["mlo"])["logits"]).double().numpy()
    np.testing.assert_allclose(got["p"][0][[0, 3, 4]], plain[[0, 3, 4]], rtol=1e-5, atol=1e-6)
    assert np.isnan(got["logits_mlo"][0][1]).all() and np.isnan(got["logits_cc"][0][2]).all()
    assert not np.isnan(got["logits_cc"][0][[0, 1, 3, 4]]).any()


def test_ensemble_frames_mean_over_runs_that_read_the_breast():
    a = pd.DataFrame({"p_benign": [0.2, 0.4], "p_malignant": [0.1, np.nan], "p_cc_malignant": [0.3, 0.5]},
                     index=pd.Index(["x", "y"], name="breast_id"))
    b = pd.DataFrame({"p_benign": [0.6, 0.8], "p_malignant": [0.3, 0.9], "logit_cc_malignant": [-1.0, 2.0]},
                     index=pd.Index(["x", "y"], name="breast_id"))
    mean, n = ensemble_frames([a, b])
    assert mean.loc["x", "p_benign"] == pytest.approx(0.4) and mean.loc["x", "p_malignant"] == pytest.approx(0.2)
    assert mean.loc["y", "p_malignant"] == pytest.approx(0.9)  # run a could not read y
    assert mean.loc["y", "p_cc_malignant"] == pytest.approx(0.5) and mean.loc["y", "logit_cc_malignant"] == 2.0
    assert list(n) == [2, 1]


# ---- trained tiny runs -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two image-only runs of different families on a tiny cohort, and a copy of the Joint run whose
    checkpoint reads 3 channels (image + heatmaps), as a run trained with data.heatmaps=true would."""
    from mvmammo.data.synthetic import generate_cohort
    from mvmammo.training.loop import train

    root = tmp_path_factory.mktemp("predict")
    generate_cohort(root / "cohort", preset="balanced", breasts=32, size_cc=(H, W), size_mlo=(H, W), seed=5,
                    heatmaps=True, progress=False, workers=1)
    table = root / "cohort" / "exams.csv"
    out = {}
    for name, extra in (("joint", {"model.family": "joint"}), ("split", {"model.family": "split", "run.seed": 1})):
        train(resolve("default", tiny_overrides(table, root / name, **{"optim.epochs": 1, "run.max_steps": 2,
                                                                       "data.heatmaps": "false", **extra})))
        out[name] = root / name
    heat = root / "heat"
    shutil.copytree(out["joint"], heat)
    cfg = resolve("default", tiny_overrides(table, heat))
    torch.save({"model": build_model(cfg.model, in_channels=3).state_dict()}, heat / "best.pt")
    out.update(heat=heat, table=table, root=root)
    return out


def windowed_copy(runs, name: str, rows=slice(0, 6), labels=True) -> Path:
    """A subset of the cohort table marked as already windowed (margin 0), next to the cohort's images."""
    df = pd.read_csv(runs["table"], dtype={"patient_id": str, "exam_id": str}).iloc[rows].copy()
    df["cc_window_margin"] = df["mlo_window_margin"] = 0
    if not labels:
        df = df.drop(columns=["benign", "malignant", "split"])
    path = runs["table"].parent / name
    df.to_csv(path, index=False)
    return path


def test_predict_ensemble_is_the_mean_of_single_runs(runs, tmp_path):
    table = windowed_copy(runs, "new.csv")
    a = predict_table([runs["joint"]], table, tmp_path / "a.csv", tta=2, progress=False)
    b = predict_table([runs["split"]], table, tmp_path / "b.csv", tta=2, progress=False)
    ab = predict_table([runs["joint"], runs["split"]], table, tmp_path / "ab.csv", tta=2, progress=False)
    for c in ("p_benign", "p_malignant"):
        np.testing.assert_allclose(ab[c], (a[c] + b[c]) / 2, rtol=1e-12)
    # per-view contributions: Joint gives logits (adding up to the fused logit), Split probabilities
    assert {"logit_cc_malignant", "logit_mlo_benign"} <= set(a.columns) and "p_cc_malignant" not in a.columns
    assert {"p_cc_malignant", "p_mlo_benign"} <= set(b.columns) and "logit_cc_malignant" not in b.columns
    np.testing.assert_allclose(ab["logit_cc_malignant"], a["logit_cc_malignant"])
    np.testing.assert_allclose(ab["p_mlo_benign"], b["p_mlo_benign"])
    src = pd.read_csv(table, dtype={"patient_id": str, "exam_id": str})
    assert list(ab.columns[:7]) == ["patient_id", "exam_id", "side", "breast_id", "p_benign", "p_malignant", "views"]
    assert list(ab["patient_id"]) == list(src["patient_id"]) and list(ab["side"]) == list(src["side"])
    assert ab[["p_benign", "p_malignant"]].stack().between(0, 1).all()
    assert (ab["views"] == "cc+mlo").all() and (ab["n_runs"] == 2).all() and (ab["warning"].fillna("") == "").all()
    on_disk = pd.read_csv(tmp_path / "ab.csv")
    np.testing.assert_allclose(on_disk["p_malignant"], ab["p_malignant"])
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["a.csv", "ab.csv", "b.csv"]  # no temp left


def test_heatmap_run_on_a_table_without_heatmaps_is_one_line(runs, tmp_path, capsys):
    table = windowed_copy(runs, "noheat.csv")
    df = pd.read_csv(table).drop(columns=[c for c in pd.read_csv(table).columns if "heatmap" in c])
    df.to_csv(table, index=False)
    rc = main(["predict", str(runs["heat"]), "--table", str(table), "--out", str(tmp_path / "p.csv"),
               "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and err[0].startswith("error: ") and "heatmap" in err[0]
    assert str(runs["heat"]) in err[0] and not (tmp_path / "p.csv").exists()


def test_cli_predict_unlabelled_raw_table_with_a_one_view_breast(runs, tmp_path, capsys):
    """import-like raw table: no labels, no split, not windowed, one breast with MLO only."""
    df = pd.read_csv(runs["table"], dtype={"patient_id": str, "exam_id": str}).head(6)
    df = df[["patient_id", "exam_id", "side", "cc_path", "mlo_path"]].copy()
    for c in ("cc_path", "mlo_path"):
        df[c] = [str((runs["table"].parent / p).resolve()) for p in df[c]]
    df.loc[2, "cc_path"] = ""
    table = tmp_path / "raw.csv"
    df.to_csv(table, index=False)
    out = tmp_path / "out" / "pred.csv"
    rc = main(["predict", str(runs["joint"]), str(runs["split"]), "--table", str(table), "--out", str(out),
               "--tta", "1", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    res = pd.read_csv(out, dtype={"patient_id": str}).fillna({"warning": ""})
    assert len(res) == 6 and list(res["views"]) == ["cc+mlo", "cc+mlo", "mlo", "cc+mlo", "cc+mlo", "cc+mlo"]
    assert res["p_malignant"].notna().all() and (res["n_runs"] == 2).all()
    assert "one view (MLO only)" in res.loc[2, "warning"]
    assert np.isnan(res.loc[2, "logit_cc_malignant"]) and not np.isnan(res.loc[2, "logit_mlo_malignant"])
    assert (tmp_path / "out" / "pred_work" / "preprocessed" / "exams.csv").exists()
    assert "6 of 6 breasts predicted by 2 run(s)" in captured.out


def test_cli_predict_dicom_folder(runs, tmp_path, capsys):
    """Real NYU sample pixels wrapped as MG DICOMs, plus a non-MG file: predict --dicom end to end."""
    from PIL import Image

    from test_dicom_folder import REAL, write_dicom

    if not REAL.is_dir():
        pytest.skip("real sample images not available")
    folder = tmp_path / "dicoms"
    for png in sorted(REAL.glob("*.png")):
        side, view = png.stem.split("_")[1].split("-")
        write_dicom(folder / f"{png.stem}.dcm", np.asarray(Image.open(png))[::4, ::4], patient="nyu0", study="9.9",
                    side=side, view=view)
    write_dicom(folder / "scout.dcm", np.zeros((8, 8), np.uint16), modality="CT")
    out = tmp_path / "pred.csv"
    rc = main(["predict", str(runs["joint"]), "--dicom", str(folder), "--out", str(out), "--tta", "0",
               "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "DICOM: 4 images used in 2 breasts (0 with one view), 1 exams, 1 patients; 1 files skipped (not MG 1)" \
        in captured.err
    skipped = pd.read_csv(tmp_path / "pred_skipped.csv")
    assert list(skipped["reason"]) == ["not a mammogram (Modality CT, not MG)"]
    res = pd.read_csv(out, dtype={"patient_id": str, "exam_id": str})
    assert list(res["side"]) == ["L", "R"] and (res["patient_id"] == "nyu0").all() and (res["views"] == "cc+mlo").all()
    assert res["p_malignant"].between(0, 1).all() and (res["n_runs"] == 1).all()


# ---- external validation -----------------------------------------------------------------------------

def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def test_evaluate_on_another_labelled_table(runs, tmp_path, capsys):
    from mvmammo.evaluation.metrics import auc
    from mvmammo.evaluation.tables import table as paper_table

    run = tmp_path / "run"
    shutil.copytree(runs["joint"], run)
    ext = windowed_copy(runs, "ext.csv", rows=slice(0, 32))
    before = _digest(run)
    res = evaluate_run(run, split="all", table=ext, n_boot=50)
    after = _digest(run)
    new = set(after) - set(before)
    assert new == {"predictions_external-ext.csv", "metrics_external-ext.json", ".lock"} - set(before)
    assert all(after[k] == v for k, v in before.items() if k != ".lock")  # the run's own files untouched
    pred = pd.read_csv(run / "predictions_external-ext.csv")
    b = pred[pred["tta_index"] == -1]
    assert len(b) == 32 and res["breasts"] == 32 and res["name"] == "external-ext"
    assert res["malignant"]["auc"] == pytest.approx(auc(b["malignant"].to_numpy(), b["p_malignant"].to_numpy()))
    saved = json.loads((run / "metrics_external-ext.json").read_text())
    assert saved["malignant"]["auc"] == pytest.approx(res["malignant"]["auc"])
    assert {"delong_lo", "delong_hi", "boot_lo", "boot_hi"} <= set(saved["malignant"])
    df = paper_table([run], split="external-ext", n_boot=50)
    assert df.loc[0, "malignant_ens"] == pytest.approx(res["malignant"]["auc"])
    # an unknown split lists those present
    with pytest.raises(RunError, match=r"split 'holdout' has no breasts.*splits present: test, train, val"):
        evaluate_run(run, split="holdout", table=ext)
    # the CLI: one split of the table, named after it (the tiny test split may lack a class: AUC warnings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert main(["evaluate", str(run), "--table", str(ext), "--split", "test", "--tta", "0"]) == 0
    assert f"{run} [external-ext-test, tta 0] malignant: AUC" in capsys.readouterr().out
    assert (run / "predictions_external-ext-test.csv").exists()
    # `table` accepts the result by name
    assert main(["table", str(run), "--split", "external-ext"]) == 0
    assert capsys.readouterr().out.splitlines()[2].startswith("run ")  # header, rule, the row named by the folder


def test_evaluate_refuses_an_unlabelled_table(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["joint"], run)
    with pytest.raises(Exception, match="benign|label"):
        evaluate_run(run, table=windowed_copy(runs, "nolab.csv", labels=False), split="all")
    assert not list(run.glob("predictions_external*"))


# ---- unusable run folders: one line naming the run and what to do -------------------------------------

def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]
    return err[0]


def test_run_folder_errors_are_one_line(runs, tmp_path, capsys):
    table = windowed_copy(runs, "err.csv")
    out = str(tmp_path / "p.csv")
    assert main(["predict", str(tmp_path / "nope"), "--table", str(table), "--out", out]) == 1
    assert "no such run folder" in _one_error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(tmp_path / "empty"), "--table", str(table), "--out", out]) == 1
    assert "not a run folder (no config.json)" in _one_error_line(capsys)
    bad = tmp_path / "bad"
    shutil.copytree(runs["joint"], bad)
    (bad / "best.pt").unlink()
    assert main(["predict", str(bad), "--table", str(table), "--out", out, "--no-progress"]) == 1
    line = _one_error_line(capsys)
    assert "no best.pt" in line and "--checkpoint last" in line
    (bad / "config.json").write_text("{ not json")
    assert main(["evaluate", str(bad)]) == 1
    assert "unreadable run config" in _one_error_line(capsys)
    assert not (tmp_path / "p.csv").exists()
    # table / compare on runs that were never evaluated on that split
    fresh = tmp_path / "fresh"
    shutil.copytree(runs["joint"], fresh)
    assert main(["table", str(fresh), "--split", "external-foo"]) == 1
    line = _one_error_line(capsys)
    assert "not evaluated on 'external-foo'" in line and "--table TABLE" in line
    assert main(["compare", str(fresh), str(runs["split"])]) == 1
    assert "not evaluated on 'test'" in _one_error_line(capsys)
