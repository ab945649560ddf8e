"""One sweep worker: claim a WAITING trial, train its run(s), tell the value; until no work is left.

``python -m mvmammo.sweep.worker SWEEP_DIR`` (the local executor starts K of these; the Slurm executor runs
:func:`run_worker` in each array task). A trial's runs are ordinary run folders ``trials/t<slot>-s<seed>``
named by the slot, so a retried trial (same slot) resumes from its last.pt. The value is the mean over the
trial's seeds of each run's best validation malignant AUC, read from metrics.jsonl.
"""
from __future__ import annotations

import argparse
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from mvmammo import runlog
from mvmammo.errors import MvError, one_line
from mvmammo.analysis.hooks import hooks_for
from mvmammo.sweep import spaces
from mvmammo.sweep import study as st

POLL_S = 1.0  # idle workers look for retried trials this often (scaled up to the heartbeat interval)


def run_dir(sweep_dir: str | Path, slot: int, seed: int) -> Path:
    return Path(sweep_dir) / "trials" / f"t{slot:04d}-s{seed}"


def best_val_auc(run: str | Path) -> float:
    """Best validation malignant AUC in a run folder's metrics.jsonl (torn or null lines skipped)."""
    recs, _ = runlog.read(Path(run) / "metrics.jsonl")
    vals = [r.get("val_auc_malignant") for r in recs if r.get("kind") == "epoch"]
    vals = [float(v) for v in vals if isinstance(v, (int, float)) and math.isfinite(float(v))]
    if not vals:
        raise MvError(f"{Path(run) / 'metrics.jsonl'}: no finite validation AUC; the run did not finish an epoch "
                      "with both classes in the validation split")
    return max(vals)


def trial_config(spec: st.SweepSpec, params: dict[str, float], out: Path, seed: int, progress: bool = False):
    from mvmammo.config import resolve

    space = spaces.get(spec.experiment)
    extra = [f"data.cache_dir={Path(spec.out).resolve() / 'cache'}"]
    overrides = extra + list(spec.overrides) + list(space.base) + spaces.as_overrides(params) + [
        f"run.out={out}", f"run.seed={seed}", f"run.progress={'true' if progress else 'false'}"]
    return resolve(spec.preset, overrides)


def train_run(spec: st.SweepSpec, cfg) -> None:
    """Train one run folder here, or under torchrun on G local GPUs when spec.torchrun_gpus > 1."""
    from mvmammo import config as config_mod

    if spec.torchrun_gpus > 1:
        cmd = ["torchrun", "--standalone", f"--nproc_per_node={spec.torchrun_gpus}", "-m", "mvmammo", "train"]
        cmd += [f"{key}={_fmt(v)}" for key, v in config_mod.flat_items(cfg)]
        subprocess.run(cmd, check=True)
        return
    from mvmammo.experiments.blend_estimate import ensure_weights
    from mvmammo.runlock import RunLocked
    from mvmammo.training.loop import train

    while True:
        try:
            ensure_weights(cfg)
            train(cfg, hooks=hooks_for(cfg))
            return
        except RunLocked:
            # A previous attempt of this slot, declared dead but still alive, holds the folder: wait for it to
            # end, then resume from its last.pt (the lock is released by the kernel when it exits).
            time.sleep(5.0)


def _fmt(v) -> str:
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(str(x) for x in v) + ")"
    return str(v)


def run_trial(spec: st.SweepSpec, trial) -> float:
    """The objective: train the trial's runs (resuming any), return the mean best validation AUC."""
    slot = int(trial.user_attrs["slot"])
    params = spaces.suggest(trial, spaces.get(spec.experiment))
    scores = []
    for seed in spec.trial_seeds:
        out = run_dir(spec.out, slot, seed)
        if (out / "last.pt").exists():
            trial.set_user_attr(f"resumed_s{seed}", True)  # a retried attempt continues the dead one's run
        if not (out / "DONE").exists():
            train_run(spec, trial_config(spec, params, out, seed))
        scores.append(best_val_auc(out))
    return float(sum(scores) / len(scores))


def claim(study, storage):
    """Move one WAITING trial to RUNNING for this worker (None when there is none left)."""
    import optuna
    from optuna.trial import TrialState

    for t in sorted(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)), key=lambda t: t.number):
        try:
            if storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                return t
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def run_worker(sweep_dir: str | Path, threads: int = 0) -> int:
    """Claim and run trials until none is WAITING and none RUNNING elsewhere; returns trials run here."""
    import optuna
    from optuna.trial import TrialState

    spec = st.load_spec(sweep_dir)
    if threads:
        import torch

        torch.set_num_threads(threads)  # K workers share the cores: one thread pool each, no oversubscription
    study, storage = st.open_study(spec)
    host, pid, ran = socket.gethostname(), os.getpid(), 0
    poll = min(max(POLL_S, spec.heartbeat_s / 2), 30.0)
    while True:
        st.fail_stale(study, storage, spec.grace_s, spec.max_retry)
        frozen = claim(study, storage)
        if frozen is None:
            if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                time.sleep(poll)  # a running trial may still die and come back as WAITING
                continue
            return ran
        slot = st.slot_of(frozen)
        study.sampler = st.sampler_for(spec, slot)
        trial = optuna.Trial(study, frozen._trial_id)
        storage.set_trial_system_attr(frozen._trial_id, "mvmammo:worker", f"{host}:{pid}")
        with st.Heartbeat(storage, frozen._trial_id, spec.heartbeat_s):
            try:
                value, state = run_trial(spec, trial), TrialState.COMPLETE
            except KeyboardInterrupt:
                _give_back(study, storage, frozen._trial_id, spec.max_retry)
                raise
            except Exception as exc:  # the trial fails, the worker goes on with the next one
                storage.set_trial_system_attr(frozen._trial_id, st.FAIL_REASON, one_line(exc))
                print(f"sweep worker {pid}: slot {slot} failed: {one_line(exc)}", file=sys.stderr, flush=True)
                value, state = None, TrialState.FAIL
        try:
            study.tell(trial, value, state=state)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # failed by the heartbeat check meanwhile; its retry (same slot) finds the finished run folder
        ran += 1


def _give_back(study, storage, trial_id: int, max_retry: int) -> None:
    """Interrupted (Ctrl-C): fail the trial and queue its retry now, rather than after the grace period."""
    import optuna
    from optuna.trial import TrialState

    try:
        storage.set_trial_system_attr(trial_id, st.FAIL_REASON, "worker interrupted")
        if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            st.retry_callback(max_retry)(study, storage.get_trial(trial_id))
    except optuna.exceptions.UpdateFinishedTrialError:
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mvmammo.sweep.worker", description="one sweep worker")
    p.add_argument("sweep_dir")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = p.parse_args(argv)
    try:
        run_worker(args.sweep_dir, args.threads)
    except MvError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
