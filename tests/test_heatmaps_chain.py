"""`mvmammo demo --heatmaps model`: the option parses, the default demo does not run the chain, and the option
runs the heatmap chain experiment (shrunk here to seconds: a tiny cohort, patch classifier and Joint runs)."""
from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from mvmammo.cli import build_parser, main


pytestmark = pytest.mark.usefixtures("one_thread")


def test_demo_heatmaps_option_parses():
    parser = build_parser()
    assert parser.parse_args(["demo"]).heatmaps == "imitation"          # the default demo is unchanged
    assert parser.parse_args(["demo", "--heatmaps", "model"]).heatmaps == "model"
    assert parser.parse_args(["demo", "--heatmaps", "imitation", "--quick"]).heatmaps == "imitation"
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["demo", "--heatmaps", "nyu"])
    assert exc.value.code == 2


def _record_steps(monkeypatch, calls: list):
    """Replace the default demo's steps 1-4 (minutes of training) by a recorder."""
    from mvmammo.experiments import demo as demo_mod

    monkeypatch.setattr(demo_mod, "main_steps", lambda out, quick, jobs, t0: calls.append(("main", out, quick)))


def test_default_demo_does_not_run_the_chain(tmp_path, monkeypatch, capsys):
    from mvmammo.experiments import demo as demo_mod

    calls = []
    _record_steps(monkeypatch, calls)
    monkeypatch.setattr(demo_mod, "heatmap_step", lambda *a: calls.append(("chain",)))
    monkeypatch.setattr("mvmammo.report.html.write_report",
                        lambda folders, path, title: calls.append(("report", folders)) or path)
    assert main(["demo", "--out", str(tmp_path / "d"), "--quick"]) == 0
    assert calls == [("main", tmp_path / "d", True), ("report", [tmp_path / "d"])]


def test_demo_rejects_an_unknown_heatmap_source_in_one_line(tmp_path):
    from mvmammo.errors import UsageError
    from mvmammo.experiments.demo import demo

    with pytest.raises(UsageError, match="--heatmaps nyu: use one of imitation, model"):
        demo(tmp_path, heatmaps="nyu")


def test_demo_heatmaps_model_runs_the_chain(tmp_path, monkeypatch):
    """The option wires to `experiment heatmaps` (--quick, shrunk): chain, both rows, tables, one report."""
    from mvmammo.experiments import heatmaps as chain

    calls = []
    _record_steps(monkeypatch, calls)
    # Seconds, not minutes: 120 breasts at 64x48, 16-px patches, a 2-block DenseNet for one epoch, and 1-epoch
    # Joint runs of width 4 without TTA.
    monkeypatch.setattr(chain, "QUICK_CHAIN", {**chain.QUICK_CHAIN, "breasts": 120, "size": (64, 48), "patch": 16,
                                               "stride": 8, "per_lesion": 2, "per_image": 1, "epochs": 1,
                                               "growth": 4, "blocks": (1, 1), "init_features": 8})
    monkeypatch.setattr(chain, "EXPERIMENT", dataclasses.replace(
        chain.EXPERIMENT, quick_overrides=("data.size_cc=(64, 48)", "data.size_mlo=(64, 48)", "optim.epochs=1",
                                           "run.tta=1", "model.width=4")))
    from mvmammo.report import html

    real_report = html.write_report
    # Steps 1-4 are skipped here, so OUT holds no runs of its own: record what the demo's report is given.
    monkeypatch.setattr(html, "write_report", lambda folders, path, title: calls.append(("report", folders)) or path)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick", "--jobs", "1", "--heatmaps", "model"]) == 0
    sub = out / "heatmaps"
    assert calls == [("main", out, True), ("report", [out, sub])]    # steps 1-4 first; one report covers both

    pix = json.loads((sub / "chain" / "pixel_auc.json").read_text())
    assert pix["chain"]["breasts"] == 120                               # the shrunk quick chain ran
    assert set(pix["seconds"]) == {"cohort", "patches_extract", "patches_train", "heatmaps", "pixel_auc"}
    for source in ("trained", "imitation"):
        assert all(0.0 <= pix[source][c] <= 1.0 for c in ("benign", "malignant"))
    # The rows read the chain's table (model-made heatmaps), one without and one with the heatmap channels.
    for row, with_maps in (("joint_image", False), ("joint_heatmaps", True)):
        cfg = json.loads((sub / f"{row}-s0" / "config.json").read_text())
        assert cfg["data"]["heatmaps"] is with_maps
        assert cfg["data"]["table"] == str(sub / "chain" / "heatmaps" / "exams.csv")
        assert (sub / f"{row}-s0" / "metrics_test.json").is_file()
    maps = pd.read_csv(sub / "chain" / "heatmaps" / "exams.csv")
    assert maps["cc_heatmap_malignant"].str.startswith("maps/").all()  # made by `heatmaps`, not the imitation
    assert len(pd.read_csv(sub / "heatmaps.csv")) == 2                  # the experiment's table: two rows
    page = real_report([sub], tmp_path / "report.html", title="chain").read_text()
    assert "joint_image" in page and "joint_heatmaps" in page          # the chain's folder renders in a report
