"""`mvmammo demo`: the main job on the embedded synthetic cohort, at CPU scale.

1. the cohort: the `paper` preset, its summary, oracle AUCs and a preview montage;
2. Table 1: uni-view MLO, uni-view CC, Split, Joint, Shared, 3 seeds each, test AUC with 10 TTA windows,
   mean +- std, the 3-seed ensemble with DeLong and patient-bootstrap 95% CIs, the gap to the oracle;
3. learning curves (train / validation AUC per epoch, mean +- std over seeds);
4. which view the Joint network learns from: gradient norms per column, Loss Change Allocation (a short
   extra Joint run with run.lca on), the view-utilisation table and figures (analysis/demo_step.py).
5. only with `--heatmaps model` (not in the default demo, which keeps its 15-minute budget): the heatmap chain
   (experiments/heatmaps.py) into OUT/heatmaps: a patch classifier trained on the synthetic lesions makes real
   heatmaps, their pixel-level AUC against the true lesion disks, then Joint image-only vs image+heatmaps.
   The tables above read the cohort's imitation heatmaps either way (`--heatmaps imitation`, the default).
Everything lands under the output folder; rerunning resumes or skips finished runs.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from mvmammo import experiments
from mvmammo.errors import UsageError
from mvmammo.experiments.report import report_experiment
from mvmammo.experiments.runner import row_config, run_experiment

DEMO_EXPERIMENTS = ("table1", "table2")
HEATMAP_CHOICES = ("imitation", "model")  # `demo --heatmaps`: the cohort's drawn maps only, or + the chain step


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


def main_steps(out: Path, quick: bool, jobs: int | None, t0: float) -> None:
    """Steps 1-4: the cohort, the tables, learning curves and view utilisation (the default demo)."""
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


def heatmap_step(out: Path, quick: bool, jobs: int | None) -> Path:
    """Step 5 (`--heatmaps model`): the heatmap chain experiment in its own folder OUT/heatmaps.

    Its own folder, because its rows use the chain's cohort (exams table with model-made heatmaps), not the
    tables' cohort: in OUT the report would compare them with the wrong cohort's oracle."""
    exp = experiments.get("heatmaps")
    sub = out / "heatmaps"
    print(f"\n== {exp.reproduces}: {len(exp.rows)} rows x {len(exp.quick_seeds if quick else exp.seeds)} "
          f"seed(s), in {sub} ==", flush=True)
    runs = run_experiment(exp, sub, quick=quick, jobs=jobs)
    report_experiment(exp, runs, sub)
    return sub


def demo(out: Path, quick: bool = False, jobs: int | None = None, heatmaps: str = "imitation") -> None:
    if heatmaps not in HEATMAP_CHOICES:
        raise UsageError(f"mvmammo demo --heatmaps {heatmaps}: use one of {', '.join(HEATMAP_CHOICES)}")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    main_steps(out, quick, jobs, t0)
    folders = [out]
    if heatmaps == "model":
        folders.append(heatmap_step(out, quick, jobs))
        print(f"({time.time() - t0:.0f} s so far)")
    from mvmammo.report.html import write_report

    title = "mvmammo demo: the paper's tables on the synthetic cohort"
    if heatmaps == "model":
        title += ", and the heatmap chain"
    path = write_report(folders, out / "report.html", title=title)
    print(f"report: {path} (one self-contained page; open it in a browser)")
    print(f"({time.time() - t0:.0f} s in all)")
