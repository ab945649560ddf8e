"""`mvmammo experiment NAME --out DIR [--quick]` and `mvmammo demo [--quick] [--heatmaps model]`."""
from __future__ import annotations

import argparse
import pkgutil
import time
from pathlib import Path

# The timing on record (README, 2026-11-27, `mvmammo demo` on the project's 2-core CPU machine, two runs side
# by side, exam-level sampling): table1, 15 runs x 7 epochs, in 274 s. Costs below scale it by run-epochs
# (evaluation and the blending estimate included only as far as table1's runs include them).
SECONDS_PER_RUN_EPOCH = 274 / (15 * 7)


def _experiments() -> list:
    from mvmammo import experiments

    found = []
    for info in sorted(pkgutil.iter_modules(experiments.__path__), key=lambda m: m.name):
        try:
            found.append(experiments.get(info.name))
        except (KeyError, AttributeError):
            continue  # runner, report, demo: modules without an EXPERIMENT
    return found


def _cost(exp) -> str:
    """Training runs of an experiment at full (demo) scale, run-epochs, and a rough wall time on 2 CPU cores."""
    seeds = len(exp.seeds)
    own = {r.name for r in exp.rows}
    # Rows this experiment needs from elsewhere (another experiment's rows); its own rows are counted once.
    needed = {n for r in exp.rows for n in r.needs if n.rpartition(":")[2] not in own or ":" in n and
              n.rpartition(":")[0] != exp.name}
    estimates = {o for r in exp.rows for o in r.overrides if o.startswith("reg.blend_weights_file=")}
    n_est = sum(seeds if "{seed}" in e else 1 for e in estimates)  # an offline estimate trains 3 models
    runs = (len(exp.rows) + len(needed)) * seeds + 3 * n_est
    epochs = next((int(o.split("=", 1)[1]) for o in exp.overrides if o.startswith("optim.epochs=")), 0)
    if not epochs:
        return f"{runs} training runs"
    return (f"{runs} training runs x {epochs} epochs, "
            f"~{runs * epochs * SECONDS_PER_RUN_EPOCH / 60:.0f} min")


def _listing() -> str:
    lines = ["experiments (NAME: the table it reproduces; its cost at demo scale):"]
    for exp in _experiments():
        lines.append(f"  {exp.name:<9} {exp.reproduces}")
        note = f" {exp.cost_note}" if getattr(exp, "cost_note", "") else ""
        lines.append(f"  {'':<9} {len(exp.rows)} rows x {len(exp.seeds)} seeds: {_cost(exp)}{note}")
        lines.append(f"  {'':<9} rows: {', '.join(r.name for r in exp.rows)}")
    lines += ["times: on 2 CPU cores, scaled by run-epochs from the recorded timing (table1 in 274 s at 7 epochs, "
              "README 2026-11-27).",
              "--quick: the smoke-test scale (one seed, 3 epochs, a smaller cohort; minutes). Results land in "
              "--out: run folders, the NAME.txt/.csv table, learning curves and report.html (`mvmammo report`)."]
    return "\n".join(lines)


def register(sub) -> None:
    p = sub.add_parser("experiment", help="run a paper-table experiment (see src/mvmammo/experiments/)",
                       description="Train and evaluate every row x seed of a paper table, then write its table "
                                   "and an HTML report.",
                       epilog=_listing(), formatter_class=argparse.RawDescriptionHelpFormatter)
    names = ", ".join(e.name for e in _experiments())
    p.add_argument("name", help=f"the experiment: {names} (listed below)")
    p.add_argument("--out", default=None, help="experiment folder (default runs/NAME)")
    p.add_argument("--quick", action="store_true", help="smoke-test scale")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the experiment's)")
    p.add_argument("--rows", default="", help="comma-separated subset of rows")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs side by side (default: one per CPU core without a GPU, 1 with one)")
    p.add_argument("overrides", nargs="*", help="extra config overrides for every run")
    p.set_defaults(func=run_experiment_cmd)
    d = sub.add_parser("demo", help="the main job on the embedded synthetic cohort: the paper's tables, CPU scale")
    d.add_argument("--out", default="runs/demo", help="folder for the demo's runs, tables, figures and report (default runs/demo)")
    d.add_argument("--quick", action="store_true", help="a reduced version for smoke tests (about 2 minutes)")
    d.add_argument("--jobs", type=int, default=None, help="runs side by side (default: one per CPU core)")
    d.add_argument("--heatmaps", choices=("imitation", "model"), default="imitation",
                   help="imitation (default): the tables use the cohort's drawn heatmaps, nothing more; model: "
                        "also run the heatmap chain (`experiment heatmaps`: a patch classifier trained on the "
                        "synthetic lesions makes real heatmaps, then Joint image-only vs image+heatmaps) into "
                        "OUT/heatmaps (~8 more minutes on 2 shared cores at full scale)")
    d.set_defaults(func=run_demo)


def run_experiment_cmd(args) -> int:
    from mvmammo import experiments
    from mvmammo.experiments.report import report_experiment, write_html_report
    from mvmammo.experiments.runner import run_experiment

    exp = experiments.get(args.name)
    out = Path(args.out or f"runs/{exp.name}")
    seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
    rows = tuple(r for r in args.rows.split(",") if r)
    runs = run_experiment(exp, out, quick=args.quick, seeds=seeds, extra=tuple(args.overrides), rows=rows,
                          jobs=args.jobs)
    report_experiment(exp, runs, out)
    if getattr(exp, "finish", None) is not None:  # an experiment's own outputs (balance-*: its table, figure)
        exp.finish(exp, runs, out, jobs=args.jobs)
    write_html_report(out, f"{exp.reproduces}: {out}")
    return 0


def run_demo(args) -> int:
    from mvmammo.experiments.demo import demo

    t0 = time.time()
    demo(Path(args.out), quick=args.quick, jobs=args.jobs, heatmaps=args.heatmaps)
    print(f"demo finished in {time.time() - t0:.0f} s; everything is under {args.out}")
    return 0
