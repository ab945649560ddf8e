"""`mvmammo experiment balance-<preset>` (experiments/balance.py, balance_table.py, balance_figure.py):
the rows cover every method, every row's config is valid, the table's arithmetic on hand-made run folders,
and one tiny --quick run that writes the table and the figure.

Tests that need a later method's file skip that method until its file registers it; the one test that
requires ALL of them is marked FINAL below."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mvmammo import experiments
from mvmammo.experiments import balance
from mvmammo.experiments.runner import row_config
from mvmammo.method_config import LATER_METHODS

PAPER_FOUR = {"pretrain", "split_lr", "gblend", "moddrop"}


def _registered() -> set[str]:
    from mvmammo.training.methods import METHODS

    return set(METHODS)


# ---------------------------------------------------------------- the definition
def test_FINAL_every_later_method_is_registered_and_a_row():
    """FINAL COVERAGE (lead: this one must pass once every method helper has delivered; it fails while a
    method file of method_config.LATER_METHODS is missing from training/methods/)."""
    from mvmammo.training.methods import METHODS, PAPER_METHODS

    later = set(LATER_METHODS) - {"none"}
    names = {r.name for r in balance.rows()}
    assert later <= names, f"later methods without a row: {sorted(later - names)}"
    assert PAPER_FOUR <= names and {"uni_cc", "uni_mlo", "joint"} <= names
    assert later <= set(METHODS), f"later methods not registered yet: {sorted(later - set(METHODS))}"
    # Every registered method is in the experiment: the paper's three files (pretrain, moddrop, blend = gblend;
    # split_lr is an optimizer setting, no method file) and each later method by its own name.
    assert set(METHODS) - set(PAPER_METHODS) <= names
    assert len(names) == len(balance.rows())  # no duplicate row names (run folders would collide)


def test_rows_follow_the_registry_and_the_config():
    """The rows that exist today: each later method of LATER_METHODS has a row named after it; each registered
    later method is one of them (so a method added to the registry but not to the config shows up here)."""
    from mvmammo.training.methods import PAPER_METHODS

    names = [r.name for r in balance.rows()]
    assert names[:3] == ["uni_cc", "uni_mlo", "joint"]
    assert names[3:7] == ["pretrain", "split_lr", "gblend", "moddrop"]
    assert names[7:] == [m for m in LATER_METHODS if m != "none"]
    assert (_registered() - set(PAPER_METHODS)) <= set(names[7:])


def test_one_experiment_per_preset_each_in_its_own_folder():
    from mvmammo.commands.experiment import _experiments

    listed = {e.name for e in _experiments()}
    for preset in balance.PRESETS:
        exp = experiments.get(f"balance-{preset}")
        assert exp.name == f"balance-{preset}" and exp.name in listed
        assert f"data.synth_preset={preset}" in exp.overrides
        assert f"--out runs/balance-{preset}" in exp.command
        assert exp.seeds == (0, 1, 2) and exp.finish is not None
    with pytest.raises(KeyError):
        balance.experiment("easy")


@pytest.mark.parametrize("preset", balance.PRESETS)
@pytest.mark.parametrize("row", [r.name for r in balance.rows()])
def test_every_row_config_is_valid(preset, row, tmp_path):
    from mvmammo.training.checks import check

    exp = experiments.get(f"balance-{preset}")
    r = next(x for x in exp.rows if x.name == row)
    for quick in (False, True):
        cfg = row_config(exp, r, 1, tmp_path, quick)
        if cfg.reg.method != "none" and cfg.reg.method not in _registered():
            pytest.skip(f"method {cfg.reg.method} not registered yet (its helper's file is missing)")
        check(cfg)  # raises UsageError naming every problem
        assert cfg.data.synth_preset == preset and cfg.run.grad_norms
        assert cfg.run.out == str(tmp_path / f"{row}-s1")
    full = row_config(exp, r, 1, tmp_path, False)
    assert full.optim.epochs == balance.EPOCHS and full.data.synth_breasts == 800
    if row in set(LATER_METHODS):
        assert full.reg.method == row
    expected_family = {"uni_cc": "uni_cc", "uni_mlo": "uni_mlo", "ume": "split"}.get(row, "joint")
    assert full.model.family == expected_family
    assert full.model.fusion_gate == {"mla": "entropy", "qmf": "energy"}.get(row, "none")
    if row == "umt":  # the uni-view runs of the same seed teach
        assert full.methods.umt.teacher_cc == str(tmp_path / "uni_cc-s1")
        assert full.methods.umt.teacher_mlo == str(tmp_path / "uni_mlo-s1")
        assert set(r.needs) == {"uni_cc", "uni_mlo"}
    if row == "pretrain":
        assert full.reg.pretrained_cc == str(tmp_path / "uni_cc-s1") and full.reg.finetune == "head"
        assert set(r.needs) == {"uni_cc", "uni_mlo"}
    if row == "gblend":  # one estimate (3-epoch models) serves the seeds, as table2
        assert full.reg.blend == "offline" and full.reg.blend_epochs == (0, 3)
        assert full.reg.blend_weights_file == str(tmp_path / "gblend_estimate" / "blend_weights.json")


# ---------------------------------------------------------------- the table's arithmetic (hand-made runs)
Y_MAL = [1, 1, 0, 0, 0, 0]
Y_BEN = [0, 0, 1, 1, 0, 0]


def _fake_run(folder: Path, family: str, method: str, p_mal, steps, phi_cc, phi_mlo=0.1):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model": {"family": family}, "reg": {"method": method}}))
    pd.DataFrame({"breast_id": [f"b{i}" for i in range(6)], "patient_id": [f"p{i}" for i in range(6)],
                  "split": "test", "benign": Y_BEN, "malignant": Y_MAL, "p_benign": [0.1, 0.2, 0.8, 0.7, 0.3, 0.4],
                  "p_malignant": p_mal, "tta_index": -1}).to_csv(folder / "predictions_test.csv", index=False)
    lines = [{"kind": "step", "epoch": 0, "step": i, "loss": 1.0, "grad_norm_cc": c, "grad_norm_mlo": m}
             for i, (c, m) in enumerate(steps)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    mean = {"phi_cc": phi_cc, "phi_mlo": phi_mlo, "u_cc_given_mlo": 0.2, "u_mlo_given_cc": 0.05, "imbalance": 0.5}
    (folder / "utilization.json").write_text(json.dumps({"labels": {"malignant": {"ablation": {"mean": mean}}}}))
    return folder


def test_table_known_answers(tmp_path):
    from mvmammo.experiments.balance_table import balance_table, grad_ratio, write_table
    from mvmammo.experiments.balance_figure import balance_figure

    joint = [0.9, 0.4, 0.5, 0.3, 0.2, 0.1]  # positives 0.9 (beats 4 negatives), 0.4 (beats 3): AUC 7/8
    runs = [
        _fake_run(tmp_path / "joint-s0", "joint", "none", joint, [(2.0, 1.0), (1.0, 2.0)], 0.3),
        _fake_run(tmp_path / "copy-s0", "joint", "none", joint, [(1.0, 1.0)], 0.3),
        # seed 0: AUC 1; seed 1: 0.2 beats 0.1 (1), 0.4 beats 0.3, 0.25, 0.1 (3): 4/8 = 0.5
        _fake_run(tmp_path / "ogm_ge-s0", "joint", "ogm_ge", [0.9, 0.8, 0.5, 0.3, 0.2, 0.1],
                  [(2.0, 1.0), (1.0, 2.0)], 0.3),
        _fake_run(tmp_path / "ogm_ge-s1", "joint", "ogm_ge", [0.2, 0.4, 0.5, 0.3, 0.25, 0.1],
                  [(3.0, 1.0), (5.0, None), (0.0, 1.0)], 0.1),  # a step without an MLO gradient and a zero: skipped
        _fake_run(tmp_path / "uni_cc-s0", "uni_cc", "none", joint, [(1.0, None)], None),
    ]
    # (2/1 + 1/2) / 2 = 1.25; the second seed keeps only its first step: 3/1.
    assert grad_ratio(runs[0]) == pytest.approx(1.25) and grad_ratio(runs[3]) == pytest.approx(3.0)
    assert math.isnan(grad_ratio(runs[4]))
    # One view per step (MLA): the ratio of the mean norms, (2 + 4) / 2 over 4 / 1.
    mla = _fake_run(tmp_path / "alt-s0", "joint", "mla", joint, [(2.0, None), (None, 4.0), (4.0, None)], 0.1)
    assert grad_ratio(mla) == pytest.approx(0.75)
    oracle = {"malignant": {"auc_cc": 0.9, "auc_mlo": 0.8, "auc_both": 0.95}}
    res = balance_table(runs, oracle, preset="paper")
    rows = {r["row"]: r for r in res["rows"]}
    assert list(rows) == ["joint", "copy", "ogm_ge", "uni_cc"]
    assert res["n_test"] == 6 and res["n_test_pos"] == 2 and res["n_test_patients"] == 6
    j, o = rows["joint"], rows["ogm_ge"]
    assert j["auc_mean"] == pytest.approx(0.875) and math.isnan(j["auc_std"])
    assert o["auc_mean"] == pytest.approx(0.75) and o["auc_std"] == pytest.approx(math.sqrt(2 * 0.25 ** 2))
    assert o["delta_joint"] == pytest.approx(-0.125) and math.isnan(j["delta_joint"])
    # A row with Joint's predictions differs by exactly 0 on every paired resample.
    assert (rows["copy"]["delta_lo"], rows["copy"]["delta_hi"]) == (0.0, 0.0)
    assert rows["copy"]["auc_lo"] == j["auc_lo"] and j["auc_lo"] <= 0.875 <= j["auc_hi"]
    # Ensemble of the two seeds: [0.55, 0.6 | 0.5, 0.3, 0.225, 0.1]: both positives above every negative.
    assert o["ens_auc"] == pytest.approx(1.0)
    # Gap to the oracle of the row's views: both views 0.95 for Joint rows, CC's 0.9 for uni_cc.
    assert o["gap_to_oracle"] == pytest.approx(0.75 - 0.95)
    assert rows["uni_cc"]["gap_to_oracle"] == pytest.approx(0.875 - 0.9)
    assert o["phi_cc"] == pytest.approx(0.2) and o["grad_ratio"] == pytest.approx((1.25 + 3.0) / 2)
    assert math.isnan(rows["uni_cc"]["phi_cc"]) and math.isnan(rows["uni_cc"]["grad_ratio"])
    (tmp_path / "out").mkdir()
    paths = write_table(res, tmp_path / "out")
    md = paths["md"].read_text()
    assert "| ogm_ge | joint | 2 | 0.750 +- 0.354 |" in md and "-0.125 [" in md
    csv = pd.read_csv(paths["csv"])
    assert list(csv["row"]) == ["joint", "copy", "ogm_ge", "uni_cc"]
    assert json.loads(paths["json"].read_text())["rows"][0]["delta_joint"] is None  # nan -> null
    fig = balance_figure(res, tmp_path / "out" / "balance.png")
    assert fig.stat().st_size > 1000


def test_table_refuses_runs_of_different_test_sets(tmp_path):
    from mvmammo.errors import MvError
    from mvmammo.experiments.balance_table import balance_table

    a = _fake_run(tmp_path / "joint-s0", "joint", "none", [0.9, 0.4, 0.5, 0.3, 0.2, 0.1], [(1.0, 1.0)], 0.3)
    b = _fake_run(tmp_path / "x-s0", "joint", "none", [0.9, 0.4, 0.5, 0.3, 0.2, 0.1], [(1.0, 1.0)], 0.3)
    p = pd.read_csv(b / "predictions_test.csv")
    p.loc[0, "breast_id"] = "other"
    p.to_csv(b / "predictions_test.csv", index=False)
    with pytest.raises(MvError, match="other test breasts"):
        balance_table([a, b])


# ---------------------------------------------------------------- one tiny --quick run
TINY = ("data.synth_breasts=160", "model.width=4", "optim.epochs=1", "run.max_steps=3", "run.tta=1",
        "optim.batch_size=8")


def test_quick_run_writes_table_and_figure(tmp_path):
    """joint + moddrop + (ogm_ge, or the first registered later method), 1 seed, a few steps each."""
    import torch

    from mvmammo.experiments.runner import run_experiment

    later = [m for m in ("ogm_ge", *LATER_METHODS) if m in _registered() and m not in ("umt", "none")]
    rows = ("joint", "moddrop", *later[:1])
    exp = experiments.get("balance-balanced")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = run_experiment(exp, tmp_path, quick=True, seeds=(0,), extra=TINY, rows=rows, jobs=1)
        paths = exp.finish(exp, runs, tmp_path, jobs=1)
    finally:
        torch.set_num_threads(old)
    res = json.loads(paths["json"].read_text())
    assert [r["row"] for r in res["rows"]] == list(rows) and res["preset"] == "balanced"
    assert res["oracle"] is not None
    for r in res["rows"]:
        for k in ("auc_mean", "auc_lo", "auc_hi", "gap_to_oracle", "phi_cc", "phi_mlo", "u_cc_given_mlo",
                  "u_mlo_given_cc", "grad_ratio"):
            assert r[k] is not None and np.isfinite(r[k]), (r["row"], k)
        # Shapley efficiency: phi_cc + phi_mlo = A(both, centre window) - 0.5, so it stays within [-0.5, 0.5].
        assert -0.5 <= r["phi_cc"] + r["phi_mlo"] <= 0.5
    assert paths["md"].read_text().count("\n| ") == 1 + len(rows)  # header + one line per row
    assert paths["figure"].exists() and paths["figure"].stat().st_size > 1000
