"""`mvmammo sweep EXPERIMENT --trials N --workers K --out DIR` and `mvmammo sweep-figures SWEEP... --out DIR`."""
from __future__ import annotations


def register(sub) -> None:
    from mvmammo.sweep.spaces import SPACES

    p = sub.add_parser("sweep", help="the paper's hyperparameter search on Optuna (docs/sweep.md)")
    p.add_argument("experiment", help=f"search space: {', '.join(SPACES)}")
    p.add_argument("overrides", nargs="*", help="config overrides for every run, right after EXPERIMENT "
                                                "(e.g. model.width=4)")
    p.add_argument("--trials", type=int, default=10, help="number of trials (paper: 10)")
    p.add_argument("--out", required=True, help="sweep folder (trials/, journal.log, tables, figures)")
    p.add_argument("--storage", default="", help="journal:PATH (default OUT/journal.log) or a database URL, "
                                                 "e.g. postgresql+psycopg2://user@host:5432/db")
    p.add_argument("--study-name", default="", help="default mvmammo-EXPERIMENT-<folder name>")
    p.add_argument("--workers", type=int, default=1, help="concurrent workers (processes or Slurm array tasks)")
    p.add_argument("--executor", default="local", choices=["local", "slurm"], help="local worker processes, or Slurm job arrays through submitit (default local)")
    p.add_argument("--sampler", default="random", choices=["random", "tpe"], help="paper: random")
    p.add_argument("--seed", type=int, default=0, help="sampler seed")
    p.add_argument("--preset", default="default", help="config preset(s) for every run")
    p.add_argument("--trial-seeds", default="0", help="seeds trained per trial, value = mean (paper: 0,1,2)")
    p.add_argument("--final-seeds", default="0,1,2", help="seed runs at the best set for the test table")
    p.add_argument("--heartbeat", type=float, default=60.0, help="seconds between a worker's heartbeats")
    p.add_argument("--grace", type=float, default=600.0, help="a trial silent this long is failed and retried")
    p.add_argument("--max-retry", type=int, default=3, help="times a trial whose worker died is retried (default 3)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per local worker (default cores/K)")
    p.add_argument("--gpus", default="", help="local: GPU ids given round-robin to the workers, e.g. 0,1,2,3")
    p.add_argument("--torchrun-gpus", type=int, default=0, help="run each trial as torchrun on G GPUs")
    p.add_argument("--no-wait", action="store_true", help="slurm: submit and return (run again to finish)")
    p.add_argument("--no-final", action="store_true", help="stop after the search (no seed runs, table)")
    p.add_argument("--partition", default="", help="slurm partition")
    p.add_argument("--time-min", type=int, default=24 * 60, help="slurm time limit per array task, minutes")
    p.add_argument("--gpus-per-task", type=int, default=1, help="Slurm: GPUs per trial job (default 1)")
    p.add_argument("--cpus-per-task", type=int, default=8, help="Slurm: CPU cores per trial job (default 8)")
    p.add_argument("--mem-gb", type=int, default=64, help="Slurm: memory per trial job, GB (default 64)")
    p.set_defaults(func=run)
    f = sub.add_parser("sweep-figures", help="Figures 3 and 8 from sweep folders")
    f.add_argument("sweeps", nargs="+", metavar="SWEEP", help="Figure 3 gets one panel per sweep folder")
    f.add_argument("--out", required=True, help="folder for figure3.png and figure8_<sweep folder name>.png")
    f.set_defaults(func=run_figures)


def _seeds(text: str, flag: str) -> list[int]:
    from mvmammo.errors import UsageError

    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected comma-separated integers such as 0,1,2") from None
    if not seeds:
        raise UsageError(f"{flag}: give at least one seed")
    return seeds


def run(args) -> int:
    from mvmammo.sweep.executors import SlurmOptions
    from mvmammo.sweep.launch import run_sweep
    from mvmammo.sweep.study import SweepSpec

    experiment, overrides = args.experiment, args.overrides
    spec = SweepSpec(experiment=experiment, trials=args.trials, storage=args.storage, out=args.out,
                     study_name=args.study_name, sampler=args.sampler, seed=args.seed, preset=args.preset,
                     overrides=list(overrides), trial_seeds=_seeds(args.trial_seeds, "--trial-seeds"),
                     final_seeds=_seeds(args.final_seeds, "--final-seeds"), heartbeat_s=args.heartbeat,
                     grace_s=args.grace, max_retry=args.max_retry, torchrun_gpus=args.torchrun_gpus)
    slurm = SlurmOptions(partition=args.partition, time_min=args.time_min, gpus_per_task=args.gpus_per_task,
                         cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb)
    res = run_sweep(spec, workers=args.workers, executor=args.executor, slurm=slurm, wait=not args.no_wait,
                    final=not args.no_final, threads=args.threads,
                    gpus=[g for g in args.gpus.split(",") if g.strip()] or None)
    if "slot" in res:
        print(f"best set: slot {res['slot']} {res['params']} (validation AUC {res['value']:.4f})")
        print(f"test malignant AUC over seeds {res['final_seeds']}: {res['test_malignant_mean']:.3f} +- "
              f"{res['test_malignant_std']:.3f}, ensemble {res['test_malignant_ensemble']:.3f}")
        print(f"table, figures, trials.json, best.json: {args.out}")
    return 0


def run_figures(args) -> int:
    from pathlib import Path

    from mvmammo.sweep.figures import figure3, figure8

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"figure 3: {figure3(args.sweeps, out / 'figure3.png')}")
    for s in args.sweeps:
        print(f"figure 8: {figure8(s, out / f'figure8_{Path(s).resolve().name}.png')}")
    return 0
