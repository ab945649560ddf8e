"""`mvmammo experiment NAME --out DIR [--quick]` and `mvmammo demo [--quick]`."""
from __future__ import annotations

import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("experiment", help="run a paper-table experiment (see src/mvmammo/experiments/)")
    p.add_argument("name", help="table1, ...")
    p.add_argument("--out", default=None, help="experiment folder (default runs/NAME)")
    p.add_argument("--quick", action="store_true", help="smoke-test scale")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the experiment's)")
    p.add_argument("--rows", default="", help="comma-separated subset of rows")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs side by side (default: one per CPU core without a GPU, 1 with one)")
    p.add_argument("overrides", nargs="*", help="extra config overrides for every run")
    p.set_defaults(func=run_experiment_cmd)
    d = sub.add_parser("demo", help="the main job on the embedded synthetic cohort: the paper's tables, CPU scale")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--quick", action="store_true", help="a reduced version for smoke tests (about 2 minutes)")
    d.add_argument("--jobs", type=int, default=None, help="runs side by side (default: one per CPU core)")
    d.set_defaults(func=run_demo)


def run_experiment_cmd(args) -> int:
    from mvmammo import experiments
    from mvmammo.experiments.report import report_experiment
    from mvmammo.experiments.runner import run_experiment

    exp = experiments.get(args.name)
    out = Path(args.out or f"runs/{exp.name}")
    seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
    rows = tuple(r for r in args.rows.split(",") if r)
    runs = run_experiment(exp, out, quick=args.quick, seeds=seeds, extra=tuple(args.overrides), rows=rows,
                          jobs=args.jobs)
    report_experiment(exp, runs, out)
    return 0


def run_demo(args) -> int:
    from mvmammo.experiments.demo import demo

    t0 = time.time()
    demo(Path(args.out), quick=args.quick, jobs=args.jobs)
    print(f"demo finished in {time.time() - t0:.0f} s; everything is under {args.out}")
    return 0
