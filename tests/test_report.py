"""`mvmammo report` (one self-contained HTML page), the TensorBoard hook, `mvmammo experiment --help`.

One small experiment (two tiny Joint runs, trained and evaluated here) feeds the page tests and the
real-browser test; the TensorBoard run is checked against metrics.jsonl and against the same run without
the hook.
"""
from __future__ import annotations

import base64
import io
import json
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_overrides

from mvmammo.report.html import SECTION_IDS, write_report


class _Page(HTMLParser):
    """Section ids, <img> sources and external references of an HTML page."""

    def __init__(self):
        super().__init__()
        self.sections, self.imgs, self.external, self.tags = [], [], [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "section":
            self.sections.append(a.get("id"))
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        for key in ("src", "href"):
            v = a.get(key) or ""
            if v and not v.startswith(("#", "data:")):
                self.external.append(v)


def parse(text: str) -> _Page:
    p = _Page()
    p.feed(text)
    return p


def _threads_one():
    """Tiny runs on a shared 2-core machine: one torch thread avoids oversubscription (10x slower otherwise)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    return old


@pytest.fixture(scope="module")
def experiment(tiny_cohort, tmp_path_factory):
    """exp/joint-s0 (LCA on, TensorBoard hook) and exp/joint-s1, both evaluated on test; ref/joint-s0 is
    joint-s0 again without the hook."""
    import torch

    from mvmammo.config import resolve
    from mvmammo.evaluation.evaluate import evaluate_run
    from mvmammo.analysis.hooks import hooks_for
    from mvmammo.training.loop import train

    root = tmp_path_factory.mktemp("report")
    old = _threads_one()
    lca = {"run.lca": "true", "run.lca_every": 6, "run.lca_subsample": 8, "model.family": "joint"}
    try:
        for folder, seed, extra in (("exp", 0, {**lca, "run.tensorboard": "true"}),
                                    ("exp", 1, {"model.family": "joint"}),
                                    ("ref", 0, lca)):
            cfg = resolve("default", tiny_overrides(tiny_cohort, root / folder / f"joint-s{seed}",
                                                    **{"run.seed": seed, **extra}))
            train(cfg, hooks=hooks_for(cfg))
            if folder == "exp":
                evaluate_run(root / folder / f"joint-s{seed}", split="test", n_boot=50)
    finally:
        torch.set_num_threads(old)
    return root


@pytest.fixture(scope="module")
def page(experiment):
    out = write_report([experiment / "exp"], experiment / "out" / "report.html", n_boot=50)
    return out


# Figures the tiny experiment has data for: cohort preview, learning curves, gradient norms (absolute and
# relative), LCA. No utilisation, blending or sweep data: those sections say so in one line.
EXPECTED_FIGURES = 5


def test_page_has_every_section_and_inline_figures(page):
    text = page.read_text()
    p = parse(text)
    assert p.sections == list(SECTION_IDS)
    assert len(p.imgs) == EXPECTED_FIGURES
    from PIL import Image

    for src in p.imgs:  # each figure is an inline PNG that decodes
        assert src.startswith("data:image/png;base64,")
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert img.format == "PNG" and min(img.size) > 50
    assert p.external == []  # opens from disk with no network
    assert not p.tags & {"script", "link", "iframe"}
    assert "no run has utilization.json" in text and "no blended run" in text and "do not come from a sweep" in text
    assert not list(page.parent.glob(".*.tmp"))  # the atomic write left no temporary file


def test_table_values_match_sklearn(experiment, page):
    """Mean ± sample std over the two seeds of the TTA-averaged test AUC, against scikit-learn."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    aucs = {}
    for label in ("malignant", "benign"):
        per_seed = []
        for s in (0, 1):
            p = pd.read_csv(experiment / "exp" / f"joint-s{s}" / "predictions_test.csv")
            p = p[p.tta_index == -1]
            per_seed.append(roc_auc_score(p[label], p[f"p_{label}"]))
        aucs[label] = f"{np.mean(per_seed):.3f} ± {np.std(per_seed, ddof=1):.3f}"
    text = page.read_text()
    assert f"<td>{aucs['malignant']}</td>" in text and f"<td>{aucs['benign']}</td>" in text


def test_config_diff_lists_only_differing_keys(page):
    text = page.read_text()
    diff = text.split('id="config-diff"', 1)[1].split("</section>", 1)[0]
    for key in ("run.seed", "run.lca", "run.tensorboard"):
        assert f"<th>{key}</th>" in diff
    for key in ("run.out", "optim.lr", "model.family"):  # run.out always differs; the others are equal
        assert f"<th>{key}</th>" not in diff


def test_cli_writes_report_and_escapes_the_title(experiment, tmp_path, capsys):
    from mvmammo.cli import main

    out = tmp_path / "r.html"
    rc = main(["report", str(experiment / "exp" / "joint-s1"), "--out", str(out), "--boot", "20",
               "--title", "<b>mine</b>"])
    assert rc == 0 and f"report: {out}" in capsys.readouterr().out
    text = out.read_text()
    assert "&lt;b&gt;mine&lt;/b&gt;" in text and "<b>mine</b>" not in text  # autoescaped
    assert "one run: nothing to compare" in text


def test_cli_rejects_a_folder_without_runs(tmp_path, capsys):
    from mvmammo.cli import main

    (tmp_path / "empty").mkdir()
    rc = main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and err.startswith("error: ") and "no run folders inside" in err
    assert not (tmp_path / "r.html").exists()


def _fake_run(folder: Path, **cfg) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def test_experiment_folder_is_grouped_by_its_runs_files(tmp_path):
    from mvmammo.report.collect import expand

    exp = tmp_path / "demo"
    a, b, c = (_fake_run(exp / n) for n in ("uni_cc-s0", "joint-s0", "joint_lca-s0"))
    _fake_run(exp / "_cache" / "x")  # caches are never runs
    (exp / "table1_runs.json").write_text(json.dumps([str(a), str(b)]))
    # table2's Joint row is table1's runs; the path is relative to where the experiment was started
    (exp / "table2_runs.json").write_text(json.dumps(["runs/demo/joint-s0"]))
    got = expand([exp])
    assert got.groups == {"table1": [a, b], "table2": [b], "other runs in demo": [c]}
    assert got.runs == [a, b, c] and got.folders == [exp]
    assert expand([a, b]).groups == {"runs": [a, b]}  # runs given one by one form one table


def test_sweep_and_blending_sections(tmp_path):
    import matplotlib.pyplot as plt

    from mvmammo.report.collect import expand
    from mvmammo.report.figure_sections import blending_section, sweep_section

    sweep = tmp_path / "sw"
    run = _fake_run(sweep / "trials" / "t0000-s0", run={"seed": 0})
    (sweep / "sweep.json").write_text(json.dumps({"experiment": "table1", "trials": 1, "sampler": "random"}))
    fig = plt.figure(figsize=(2, 2))
    fig.savefig(sweep / "figure3.png")
    plt.close(fig)
    got = expand([sweep])
    assert got.runs == [run] and got.sweeps == [sweep]
    sec = sweep_section(got.sweeps, tmp_path)
    assert [b.kind for b in sec.blocks].count("figure") == 1 and "no trials.json yet" in sec.blocks[-1].text
    (run / "blend_weights.json").write_text(json.dumps(
        {"blend": "fixed", "source": "reg.blend_weights", "metric": "loss", "window": [0, 3], "swapped": False,
         "weights": {"cc": 0.5, "mlo": 0.25, "joint": 0.25}}))
    text = blending_section([run], []).blocks[0].text
    assert "0.250 +- 0.000  0.500 +- 0.000  0.250 +- 0.000" in text  # w_joint, w_cc, w_mlo


def test_tensorboard_scalars_equal_metrics_jsonl(experiment):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mvmammo import runlog

    run = experiment / "exp" / "joint-s0"
    ea = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    recs = runlog.records(run / "metrics.jsonl")
    epochs = [r for r in recs if r["kind"] == "epoch"]
    steps = [r for r in recs if r["kind"] == "step"]
    lca = runlog.records(run / "lca.jsonl")
    checks = {"epoch/val_auc_malignant": [(r["step"], r["val_auc_malignant"]) for r in epochs],
              "epoch/lr_cc": [(r["step"], r["lr_cc"]) for r in epochs],
              "step/loss": [(r["step"], r["loss"]) for r in steps],
              "step/grad_norm_cc": [(r["step"], r["grad_norm_cc"]) for r in steps],
              "lca/lca_mlo": [(r["step_b"], r["lca_mlo"]) for r in lca]}
    for tag, want in checks.items():
        got = [(e.step, e.value) for e in ea.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in want], tag
        # TensorBoard stores float32
        np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=1e-6, err_msg=tag)


def test_tensorboard_hook_leaves_training_unchanged(experiment):
    from mvmammo import runlog
    from mvmammo.training import checkpoint as ckpt

    def lines(run):
        return [{k: v for k, v in r.items() if k != "time_s"} for r in runlog.records(run / "metrics.jsonl")]

    with_tb, without = experiment / "exp" / "joint-s0", experiment / "ref" / "joint-s0"
    assert not (without / "tensorboard").exists()
    assert lines(with_tb) == lines(without)
    a, b = ckpt.load(with_tb / "last.pt")["model"], ckpt.load(without / "last.pt")["model"]
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_missing_tensorboard_is_one_line_before_any_run_folder(tiny_cohort, tmp_path, monkeypatch, capsys):
    from mvmammo.cli import main

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    out = tmp_path / "tb"
    rc = main(["train", *tiny_overrides(tiny_cohort, out, **{"run.tensorboard": "true"})])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "needs the tensorboard package: pip install tensorboard" in err
    assert not out.exists()


def test_experiment_help_lists_every_experiment_with_table_and_cost(capsys):
    from mvmammo import experiments
    from mvmammo.cli import main
    from mvmammo.commands.experiment import _experiments

    with pytest.raises(SystemExit) as exc:
        main(["experiment", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    names = [e.name for e in _experiments()]
    assert {"table1", "table2", "table45"} <= set(names)
    for name in names:
        exp = experiments.get(name)
        block = text.split(f"  {name} ", 1)[1]
        assert exp.reproduces in block.splitlines()[0]
        assert f"{len(exp.rows)} rows x {len(exp.seeds)} seeds: " in block.splitlines()[1]
    # Hand-counted: table1 = 5 rows x 3 seeds; table2 adds table1's two uni-view rows (3 seeds each) that its
    # pretraining row needs and one offline blending estimate (3 models).
    assert "15 training runs x" in text.split("  table1 ", 1)[1].splitlines()[1]
    assert "24 training runs x" in text.split("  table2 ", 1)[1].splitlines()[1]


def test_page_in_a_real_browser(page, tmp_path):
    """Headless Chromium: the screenshot is not blank; the rendered DOM holds every section and figure."""
    from PIL import Image

    from browser import dump_dom, find_browser, screenshot

    exe, why = find_browser()
    if exe is None:
        print(f"SKIPPED test_page_in_a_real_browser: {why}", file=sys.__stderr__)
        pytest.skip(why)
    shot = screenshot(exe, page, tmp_path / "shot.png", 1280, 2400)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2400, 1280)
    assert pixels.std() > 20  # a blank (white) page has std 0; text and figures give tens
    assert (pixels < 128).mean() > 0.01  # some dark ink: text, axes, the cohort's images
    dom = parse(dump_dom(exe, page))
    assert dom.sections == list(SECTION_IDS)
    assert len(dom.imgs) == EXPECTED_FIGURES and all(s.startswith("data:image/png;base64,") for s in dom.imgs)


def test_tensorboard_after_resume_holds_each_step_once(tiny_cohort, tmp_path):
    """A resumed run re-exports from the start with purge_step=0: TensorBoard shows every step once."""
    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mvmammo import runlog
    from mvmammo.config import resolve
    from mvmammo.analysis.hooks import hooks_for
    from mvmammo.training.loop import train

    old = _threads_one()
    try:
        for epochs in (1, 2):  # the second call resumes after epoch 1
            cfg = resolve("default", tiny_overrides(tiny_cohort, tmp_path / "r", **{"optim.epochs": epochs,
                                                                                    "run.tensorboard": "true"}))
            train(cfg, hooks=hooks_for(cfg))
    finally:
        torch.set_num_threads(old)
    assert len(list((tmp_path / "r" / "tensorboard").glob("events.out.tfevents.*"))) == 2
    ea = EventAccumulator(str(tmp_path / "r" / "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    recs = [r for r in runlog.records(tmp_path / "r" / "metrics.jsonl") if r["kind"] == "step"]
    got = [(e.step, e.value) for e in ea.Scalars("step/loss")]
    assert [s for s, _ in got] == [r["step"] for r in recs]
    np.testing.assert_allclose([v for _, v in got], [r["loss"] for r in recs], rtol=1e-6)
