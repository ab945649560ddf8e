"""`mvmammo demo`: the main job on the embedded synthetic cohort, at CPU scale.

1. the cohort: the `paper` preset, its summary, oracle AUCs and a preview montage;
2. Table 1: uni-view MLO, uni-view CC, Split, Joint, Shared, 3 seeds each, test AUC with 10 TTA windows,
   mean +- std, the 3-seed ensemble with DeLong and patient-bootstrap 95% CIs, the gap to the oracle;
3. learning curves (train / validation AUC per epoch, mean +- std over seeds);
4. which view the Joint network learns from: gradient norms per column, Loss Change Allocation (a short
   extra Joint run with run.lca on), the view-utilisation table and figures (analysis/demo_step.py).
Everything lands under the output folder; rerunning resumes or skips finished runs.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from mvmammo import experiments
from mvmammo.experiments.report import report_experiment
from mvmammo.experiments.runner import row_config, run_experiment

DEMO_EXPERIMENTS = ("table1", "table2")


def show_cohort(exp, out: Path, quick: bool) -> Path:
    """Generate (or reuse) the experiment's cohort; print its summary and oracle; write the preview."""
    from mvmammo.data import exams
    from mvmammo.data.synthetic.preview import write_preview
    from mvmammo.training.inputs import resolve_table

    cfg = row_config(exp, exp.rows[0], exp.seeds[0], out, quick)
    table = resolve_table(cfg, progress=True)
    df = exams.load_valid(table, check_files=False)
    print(f"synthetic cohort ({cfg.data.synth_preset} preset, {cfg.data.size_cc[0]}x{cfg.data.size_cc[1]} px): "
          f"{table}")
    for line in exams.summarize(df).lines():
        print("  " + line)
    oracle = json.loads((table.parent / "oracle.json").read_text())
    for label in ("malignant", "benign"):
        o = oracle[label]
        print(f"  oracle {label} AUC (test): CC only {o['auc_cc']:.3f}, MLO only {o['auc_mlo']:.3f}, "
              f"both views {o['auc_both']:.3f}")
    preview = write_preview(table.parent, path=out / "cohort_preview.png")
    print(f"  preview: {preview}")
    return table


def demo(out: Path, quick: bool = False, jobs: int | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    first = experiments.get(DEMO_EXPERIMENTS[0])
    show_cohort(first, out, quick)
    for name in DEMO_EXPERIMENTS:
        exp = experiments.get(name)
        print(f"\n== {exp.reproduces}: {len(exp.rows)} rows x {len(exp.quick_seeds if quick else exp.seeds)} "
              f"seed(s) ==", flush=True)
        runs = run_experiment(exp, out, quick=quick, jobs=jobs)
        report_experiment(exp, runs, out)
        print(f"({time.time() - t0:.0f} s so far)")
    # Training dynamics and view utilisation of table1's Joint runs (analysis/demo_step.py).
    from mvmammo.analysis.demo_step import demo_analyses

    demo_analyses(out, quick=quick)
    from mvmammo.experiments.report import write_html_report

    write_html_report(out, "mvmammo demo: the paper's tables on the synthetic cohort")
    print(f"({time.time() - t0:.0f} s in all)")
