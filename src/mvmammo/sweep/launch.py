"""`mvmammo sweep`'s flow: spec, study with N slots, workers, progress lines, then the final stage.

Running the same command again continues the sweep (same folder, same storage): slots already done are kept,
missing ones are enqueued, dead workers' trials are retried by the next worker's heartbeat check.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

from mvmammo.errors import MvError, UsageError
from mvmammo.sweep import executors, spaces
from mvmammo.sweep import study as st
from mvmammo.sweep.storage import default_url

# Fields of a sweep that must not change when it is continued (the trials already run depend on them).
_FIXED = ("experiment", "preset", "overrides", "sampler", "seed", "trial_seeds", "study_name", "storage")


def prepare_spec(spec: st.SweepSpec) -> st.SweepSpec:
    """Validate, fill defaults, and reconcile with an existing sweep.json in the folder."""
    space = spaces.get(spec.experiment)
    if spec.trials < 1:
        raise UsageError(f"--trials {spec.trials}: must be at least 1")
    missing = [k for k in space.requires if not any(o.startswith(k + "=") and o != k + "=" for o in spec.overrides)]
    if missing:
        raise UsageError(f"experiment {spec.experiment} needs {', '.join(missing)} (add e.g. {missing[0]}=RUN_DIR)")
    out = Path(spec.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    spec.out = str(out)
    spec.storage = spec.storage or default_url(out)
    spec.study_name = spec.study_name or f"mvmammo-{spec.experiment}-{out.name}"
    if (out / st.SPEC_NAME).exists():
        old = st.load_spec(out)
        changed = [k for k in _FIXED if getattr(old, k) != getattr(spec, k)]
        if changed:
            k = changed[0]
            raise UsageError(f"{out / st.SPEC_NAME}: this sweep was started with {k}={getattr(old, k)!r}, not "
                             f"{getattr(spec, k)!r}; use another --out for a different sweep")
        spec.trials = max(spec.trials, old.trials)
    # A config that cannot be built fails here, once, not in every trial.
    from mvmammo.config import ConfigError
    from mvmammo.sweep.worker import trial_config

    mid = {p.key: (p.low * p.high) ** 0.5 if isinstance(p, spaces.LogUniform) else (p.low + p.high) / 2
           for p in space.params}
    try:
        trial_config(spec, mid, out / "trials" / "check", 0)
    except ConfigError as exc:
        raise UsageError(f"sweep {spec.experiment}: {exc}") from None
    from mvmammo.sweep.storage import open_storage

    open_storage(spec.storage)  # a bad URL fails before sweep.json records it
    st.save_spec(spec)
    return spec


def _progress(study, spec: st.SweepSpec, last: str | None) -> tuple[st.Counts, str]:
    c = st.counts(study)
    line = c.line(spec.trials)
    if line != last:
        print(f"sweep {spec.experiment}: {line}", file=sys.stderr, flush=True)
    return c, line


def run_sweep(spec: st.SweepSpec, workers: int, executor: str = "local", slurm: executors.SlurmOptions | None = None,
              wait: bool = True, final: bool = True, threads: int = 0, poll_s: float = 2.0,
              gpus: list[str] | None = None) -> dict:
    spec = prepare_spec(spec)
    out = Path(spec.out)
    study, storage = st.open_study(spec, create=True)
    added = st.enqueue_slots(study, spec.trials)
    print(f"sweep {spec.experiment}: {spec.trials} trials ({added} new) in {out}, storage {spec.storage}, "
          f"{workers} {executor} worker(s)", file=sys.stderr, flush=True)
    if executor == "local":
        if not st.counts(study).finished:
            _build_cache(spec)
            procs = executors.start_local(out, workers, threads, gpus)
            last = None
            while True:
                c, last = _progress(study, spec, last)
                if all(p.poll() is not None for p in procs):
                    break
                time.sleep(poll_s)
            c, last = _progress(study, spec, last)
            if not c.finished:
                bad = [i for i, p in enumerate(procs) if p.returncode != 0]
                raise MvError(f"{out}: the workers exited with {c.waiting + c.running} trial(s) not done "
                              f"(see {out / 'logs'}/worker-{bad[0] if bad else 0}.log); run the same command "
                              "again to continue")
    elif executor == "slurm":
        if not any(o.startswith("data.cache=") and o != "data.cache=" for o in spec.overrides):
            print(f"sweep {spec.experiment}: no data.cache=DIR given: every array task will look for (and may "
                  "build) the window cache; build it once with `mvmammo cache TABLE --out DIR` and pass "
                  "data.cache=DIR", file=sys.stderr, flush=True)
        jobs = executors.submit_slurm(out, workers, slurm or executors.SlurmOptions())
        print(f"sweep {spec.experiment}: submitted Slurm job array {jobs[0].job_id.split('_')[0]} ({workers} "
              f"tasks); logs under {out / 'slurm'}", file=sys.stderr, flush=True)
        if not wait:
            return {"submitted": [j.job_id for j in jobs]}
        last = None
        while not st.counts(study).finished or not all(j.done() for j in jobs):
            _, last = _progress(study, spec, last)
            if all(j.done() for j in jobs) and not st.counts(study).finished:
                raise MvError(f"{out}: the Slurm tasks ended with trials not done (see {out / 'slurm'}); run the "
                              "same command again to continue")
            time.sleep(max(poll_s, 30.0))
    else:
        raise UsageError(f"--executor {executor!r}: one of local, slurm")
    from mvmammo.sweep.final import finish, trials_summary

    if not final:
        trials_summary(spec, study)
        return {"spec": asdict(spec)}
    if executor == "slurm":  # seed runs and TTA evaluation need a GPU node, not the login node
        job = executors.submit_final(out, slurm or executors.SlurmOptions())
        print(f"sweep {spec.experiment}: final stage (seed runs, test table) in Slurm job {job.job_id}",
              file=sys.stderr, flush=True)
        result = job.result()
    else:
        result = finish(spec, study)
    from mvmammo.sweep.figures import figure3, figure8

    result["figure3"] = str(figure3([out], out / "figure3.png"))
    result["figure8"] = str(figure8(out, out / "figure8.png"))
    return result


def _build_cache(spec: st.SweepSpec) -> None:
    """Build the shared window cache once before K workers start (they would otherwise race to build it)."""
    from mvmammo.sweep.worker import trial_config
    from mvmammo.training.inputs import prepare_cache

    cfg = trial_config(spec, {}, Path(spec.out) / "trials" / "check", 0)
    prepare_cache(cfg, progress=False)
