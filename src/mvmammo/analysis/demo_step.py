"""The demo's analysis step (after the tables): which view the Joint network learns from.

1. A short extra Joint run with Loss Change Allocation on (``joint_lca-s<seed>``): table1's Joint config,
   stopped after LCA_STEPS optimizer steps (the early phase, where the paper's Figure 4b shows most of
   the loss change), an LCA chord every LCA_EVERY steps on LCA_SUBSAMPLE training breasts. It is a separate
   run so table1's runs keep their config (and stay resumable) and so its cost is bounded.
2. View utilisation (test split, best.pt) of the first seed of every two-view row of table1.
3. Figures: gradient norms per column of the Joint runs (logged at every step of every run), cumulative
   LCA of the LCA run, utilisation bars; plus the utilisation table, printed and saved.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from mvmammo import experiments
from mvmammo.experiments import Row

LCA_STEPS = 48
LCA_EVERY = 8
LCA_SUBSAMPLE = 24


def _lca_run(exp, out: Path, quick: bool, seed: int) -> Path:
    from mvmammo.experiments.runner import row_config
    from mvmammo.training.loop import train

    joint = next(r for r in exp.rows if r.name == "joint")
    steps, subsample = (LCA_STEPS // 3, LCA_SUBSAMPLE // 2) if quick else (LCA_STEPS, LCA_SUBSAMPLE)
    row = Row("joint_lca", joint.overrides + ("run.lca=true", f"run.lca_every={LCA_EVERY}",
                                              f"run.lca_subsample={subsample}", f"run.max_steps={steps}"))
    cfg = row_config(exp, row, seed, out, quick)
    run_dir = Path(cfg.run.out)
    if not (run_dir / "DONE").exists():
        print(f"training {run_dir.name}: Joint with LCA every {LCA_EVERY} steps on {subsample} breasts, "
              f"{steps} steps", flush=True)
        from mvmammo.analysis.hooks import hooks_for

        train(replace(cfg, run=replace(cfg.run, progress=False)), hooks=hooks_for(cfg))
    return run_dir


def demo_analyses(out: Path, quick: bool = False, experiment: str = "table1") -> dict:
    """Run the analysis step on the demo's output folder; returns {figure: path} and prints the table."""
    from mvmammo.analysis.utilization import analyze_run
    from mvmammo.report.figures import all_figures
    from mvmammo.report.runs import row_name
    from mvmammo.report.utilization import format_table, load_utilization

    t0 = time.time()
    exp = experiments.get(experiment)
    seed = (exp.quick_seeds if quick else exp.seeds)[0]
    runs_file = out / f"{exp.name}_runs.json"
    runs = [Path(r) for r in json.loads(runs_file.read_text())] if runs_file.exists() else []
    print(f"\n== training dynamics and view utilisation ({exp.name}) ==", flush=True)
    lca_run = _lca_run(exp, out, quick, seed)
    # Quick mode (smoke test) analyses the Joint run only.
    rows_analysed = ("joint",) if quick else ("split", "joint", "shared")
    two_view = [r for r in runs if row_name(r) in rows_analysed and r.name.endswith(f"-s{seed}")]
    results = []
    for r in two_view:
        res = load_utilization(r) or analyze_run(r, split="test")
        results.append(res)
    if results:
        text = format_table(results, "malignant", "mean")
        (out / f"{exp.name}_utilization.txt").write_text(text + "\n")
        print(text)
    joint = [r for r in runs if row_name(r) == "joint"]
    figs = all_figures(list(dict.fromkeys(joint + [lca_run] + two_view)), out / "analysis", prefix=f"{exp.name}_")
    for name, path in figs.items():
        if path:
            print(f"{name}: {path}")
    print(f"(analysis step {time.time() - t0:.0f} s)")
    return figs
