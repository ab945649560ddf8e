"""`mvmammo sweep`: search spaces, the objective reader, the stale-trial retry, and real sweeps with concurrent
workers against a journal file (one worker killed with SIGKILL mid-trial) and a private PostgreSQL server."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mvmammo.sweep import spaces
from mvmammo.sweep import study as st
from mvmammo.sweep.worker import best_val_auc, claim

sys.path.insert(0, str(Path(__file__).parent))
from postgres import PostgresServer, find_bin  # noqa: E402


def test_spaces_are_the_papers_and_build_configs():
    from mvmammo.config import resolve

    # Appendix B / section 5 ranges, known values.
    assert spaces.get("lr-uni_cc").params == (spaces.LogUniform("optim.lr", 1e-5, 3e-3),)
    assert spaces.get("lr-joint").params == (spaces.LogUniform("optim.lr", 1e-5, 1e-3),)
    assert [p.key for p in spaces.get("split-lrs-lr1e-4").params] == ["optim.alpha_cc", "optim.alpha_mlo",
                                                                       "optim.alpha_shared"]
    assert all((p.low, p.high) == (-1.0, 1.0) for p in spaces.get("split-lrs-lr1e-5").params)
    assert all((p.low, p.high) == (0.0, 1.0) for p in spaces.get("moddrop-lr1e-4").params)
    # lr_g = lr * 10**alpha_g: 1e-4 * 10**-1 = 1e-5, 1e-4 * 10**0.5 = 3.1623e-4.
    r = spaces.effective_rates(1e-4, {"optim.alpha_cc": -1.0, "optim.alpha_mlo": 0.5})
    assert r["cc"] == pytest.approx(1e-5) and r["mlo"] == pytest.approx(3.16227766e-4) and r["shared"] == 1e-4
    for space in spaces.SPACES.values():  # every space's keys are config keys
        cfg = resolve("default", list(space.base) + spaces.as_overrides({p.key: p.low for p in space.params}))
        for p in space.params:
            node = cfg
            for part in p.key.split("."):  # nested keys too: methods.ogm_ge.alpha (the methods' spaces)
                node = getattr(node, part)
            assert node == p.low
    with pytest.raises(Exception, match="unknown sweep experiment 'nope'"):
        spaces.get("nope")


def test_best_val_auc_skips_torn_and_null_lines(tmp_path):
    lines = [{"kind": "step", "val_auc_malignant": 0.99}, {"kind": "epoch", "epoch": 0, "val_auc_malignant": 0.61},
             {"kind": "epoch", "epoch": 1, "val_auc_malignant": None}, {"kind": "epoch", "epoch": 2,
                                                                        "val_auc_malignant": 0.72}]
    text = "".join(json.dumps(x) + "\n" for x in lines) + '{"kind": "epoch", "epoch": 3, "val_auc_malig'
    (tmp_path / "metrics.jsonl").write_text(text)
    assert best_val_auc(tmp_path) == 0.72  # the step line and the torn epoch-3 line do not count


def test_stale_trial_is_failed_once_and_retried_with_its_slot_and_params(tmp_path):
    spec = st.SweepSpec(experiment="lr-joint", trials=2, storage=f"journal:{tmp_path / 'j.log'}", out=str(tmp_path),
                        study_name="t")
    study, storage = st.open_study(spec, create=True)
    assert st.enqueue_slots(study, 2) == 2 and st.enqueue_slots(study, 2) == 0  # idempotent
    import optuna

    frozen = claim(study, storage)
    study.sampler = st.sampler_for(spec, st.slot_of(frozen))
    trial = optuna.Trial(study, frozen._trial_id)
    lr = trial.suggest_float("optim.lr", 1e-5, 1e-3, log=True)
    storage.set_trial_system_attr(frozen._trial_id, st.HEARTBEAT, 1000.0)
    assert st.fail_stale(study, storage, grace_s=10, max_retry=3, now=1005.0) == []  # within grace
    # Two checks racing: only the first fails it and enqueues a retry.
    assert st.fail_stale(study, storage, grace_s=10, max_retry=3, now=1011.0) == [frozen.number]
    assert st.fail_stale(study, storage, grace_s=10, max_retry=3, now=1011.0) == []
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "WAITING", "WAITING"]
    retry = trials[2]
    assert st.slot_of(retry) == 0 and retry.params == {"optim.lr": lr}
    assert retry.system_attrs["failed_trial"] == frozen.number
    c = st.counts(study)
    assert (c.done, c.running, c.waiting, c.failed, c.retried) == (0, 0, 2, 0, 1)


def _tiny(table, epochs: int) -> list[str]:
    return [f"data.table={table}", "data.size_cc=(64, 48)", "data.size_mlo=(64, 48)", "model.width=4",
            f"optim.epochs={epochs}", "optim.batch_size=16", "run.tta=1", "run.grad_norms=false"]


def _sweep_cmd(table, out, storage, n, k, epochs, *extra) -> list[str]:
    return [sys.executable, "-m", "mvmammo", "sweep", "lr-uni_cc", *_tiny(table, epochs), "--trials", str(n), "--workers",
            str(k), "--out", str(out), "--heartbeat", "0.5", "--grace", "3", "--threads", "1",
            *(["--storage", storage] if storage else []), *extra]


def _check_exact(study, n: int, out: Path) -> None:
    """Exactly n slots, each with one COMPLETE attempt, and one run folder per slot."""
    trials = study.get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert sorted(st.slot_of(t) for t in complete) == list(range(n))
    assert all(t.state.name in ("COMPLETE", "FAIL") for t in trials)
    assert all(0.0 <= t.value <= 1.0 for t in complete)
    assert sorted(p.name for p in (out / "trials").iterdir() if p.name.endswith("-s0")) == \
        [f"t{i:04d}-s0" for i in range(n)]


def test_journal_sweep_survives_a_killed_worker(tiny_cohort, tmp_path):
    out = tmp_path / "sweep"
    proc = subprocess.Popen(_sweep_cmd(tiny_cohort, out, "", 3, 2, 3, "--final-seeds", "0,1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed, study = None, None
    deadline = time.time() + 300  # generous: the 2 shared cores may be busy with other work
    while killed is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if study is None:
            if not (out / st.SPEC_NAME).exists() or not (out / "journal.log").exists():
                continue
            study, _ = st.open_study(st.load_spec(out))
        for t in study.get_trials(states=(st_running(),)):
            run = out / "trials" / f"t{st.slot_of(t):04d}-s0"
            # Mid-trial: one epoch written (last.pt), not finished.
            if (run / "last.pt").exists() and not (run / "DONE").exists() and "mvmammo:worker" in t.system_attrs:
                pid = int(t.system_attrs["mvmammo:worker"].split(":")[1])
                os.kill(pid, signal.SIGKILL)
                killed = t
                break
    stdout, stderr = proc.communicate(timeout=400)
    assert proc.returncode == 0, stderr[-2000:]
    assert killed is not None, "no trial was caught mid-run"
    study, _ = st.open_study(st.load_spec(out))
    _check_exact(study, 3, out)
    trials = study.get_trials()
    # The killed attempt failed by the heartbeat check; its retry (same slot, same lr) resumed the run folder.
    dead = trials[killed.number]
    assert dead.state.name == "FAIL" and "no heartbeat" in dead.system_attrs[st.FAIL_REASON]
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == dead.params
    assert retry[0].user_attrs.get("resumed_s0") is True
    assert "1 retried" in stderr and "3/3 done" in stderr  # progress lines
    # Final stage: best set by validation AUC, seed runs, test table, figures.
    best = json.loads((out / "best.json").read_text())
    values = {st.slot_of(t): t.value for t in trials if t.state.name == "COMPLETE"}
    assert best["value"] == max(values.values()) and values[best["slot"]] == best["value"]
    assert best["final_seeds"] == [0, 1] and len(best["runs"]) == 2
    assert math.isfinite(best["test_malignant_mean"])
    assert "lr-uni_cc" in (out / "test_table.txt").read_text()
    for name in ("figure3.png", "figure8.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def st_running():
    from optuna.trial import TrialState

    return TrialState.RUNNING


def test_figure_band_is_mean_and_sample_std():
    from mvmammo.sweep.figures import band

    # Two trials reach epoch 0 and 1, one only epoch 0: mean/std by hand.
    x, m, s, n = band([{0: 0.5, 1: 0.7}, {0: 0.7, 1: 0.9}, {0: 0.6}])
    assert list(x) == [1, 2] and list(n) == [3, 2]
    assert m[0] == pytest.approx(0.6) and s[0] == pytest.approx(0.1)  # sample std of 0.5, 0.6, 0.7
    assert m[1] == pytest.approx(0.8) and s[1] == pytest.approx(math.sqrt(0.02))


@pytest.mark.skipif(find_bin() is None, reason="PostgreSQL server binaries (initdb, pg_ctl) not on PATH nor in "
                    "/usr/lib/postgresql/*/bin; install the postgresql package (.ci/run does)")
def test_postgres_sweep_three_concurrent_workers(tiny_cohort, tmp_path):
    with PostgresServer(find_bin()) as pg:
        out = tmp_path / "sweep"
        r = subprocess.run(_sweep_cmd(tiny_cohort, out, pg.url, 3, 3, 1, "--no-final"), capture_output=True,
                           text=True, timeout=400)
        assert r.returncode == 0, r.stderr[-2000:]
        study, _ = st.open_study(st.load_spec(out))
        _check_exact(study, 3, out)
        assert len(study.get_trials()) == 3  # nobody died: no retries, no extra trials
        workers = {t.system_attrs["mvmammo:worker"] for t in study.get_trials()}
        assert len(workers) >= 2, workers  # the trials really ran side by side
        assert st.load_spec(out).storage.startswith("postgresql+psycopg2://")


def test_plotting_and_spaces_do_not_import_torch():
    code = ("import sys, mvmammo.sweep.figures, mvmammo.sweep.spaces, mvmammo.commands.sweep; "
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr
