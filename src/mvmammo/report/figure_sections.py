"""The report's figure sections: learning curves, gradient norms, LCA with its error, view utilisation,
blending weights, sweeps. The figures are the package's own (report/figures.py, dynamics.py, plots.py,
sweep/figures.py), written as PNGs into a scratch folder and read back inline.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from mvmammo.errors import MvError
from mvmammo.report.blocks import Pre, Section, Table, Text, png_figure
from mvmammo.report.runs import read_lca

# all_figures' names -> (section id, section title, what a reader should know)
FIGURE_SECTIONS = {
    "learning curves": ("learning-curves", "Learning curves",
                        "train and validation AUC per epoch, mean ± std band over seeds (uni-view rows only "
                        "when the group has any, as the paper's Figure 3)"),
    "gradient norms": ("gradient-norms", "Gradient norms", "||dL/dθ|| per column at every step, log scale"),
    "relative gradient norms": ("gradient-norms", "Gradient norms", "||g|| / ||θ|| per column"),
    "loss change allocation": ("lca", "Loss Change Allocation",
                               "cumulative LCA per column and the approximation error per chord"),
    "view utilisation": ("utilisation", "View utilisation", "AUC with one view ablated; Shapley contributions"),
}
EMPTY = {
    "learning-curves": "no run has epoch lines in metrics.jsonl",
    "gradient-norms": "no run logged gradient norms (run.grad_norms)",
    "lca": "no run has lca.jsonl (train with run.lca=true)",
    "utilisation": "no run has utilization.json (run `mvmammo analyze utilization RUN`)",
}


def figure_sections(groups: dict[str, list[Path]], scratch: Path, label: str = "malignant") -> list[Section]:
    """One section per figure kind, one figure per group of runs that has the data."""
    from mvmammo.report.figures import all_figures

    sections: dict[str, Section] = {}
    for sid, title, _ in FIGURE_SECTIONS.values():
        sections.setdefault(sid, Section(sid, title, empty=EMPTY[sid]))
    for i, (group, runs) in enumerate(groups.items()):
        made = all_figures(runs, scratch / f"g{i}", label=label)
        for name, path in made.items():
            if path is not None:
                sid, _, caption = FIGURE_SECTIONS[name]
                sections[sid].add(png_figure(path, f"{group}: {name}", caption))
    lca = lca_error_table(all_runs(groups))
    if lca is not None:
        sections["lca"].add(lca)
    util = utilisation_text(all_runs(groups), label)
    if util is not None:
        sections["utilisation"].add(util)
    return list(sections.values())


def all_runs(groups: dict[str, list[Path]]) -> list[Path]:
    """Every run once (tables may share runs)."""
    return list(dict.fromkeys(r for runs in groups.values() for r in runs))


def lca_error_table(runs: list[Path]) -> Table | None:
    """Per run with LCA: chords and the Simpson / first-order approximation error relative to the loss change."""
    rows = []
    for r in runs:
        t = read_lca(r)
        if t.empty:
            continue
        tol = json.loads((r / "config.json").read_text()).get("run", {}).get("lca_tol")
        err = t["err_ratio"].to_numpy(dtype=float)
        fo = t["err_fo_ratio"].to_numpy(dtype=float)
        over = int((err > tol).sum()) if tol is not None else 0
        rows.append([r.name, str(len(t)), f"{np.nanmedian(err):.2e}", f"{np.nanmax(err):.2e}",
                     f"{np.nanmax(fo):.2e}", f"{tol:g}" if tol is not None else "-", str(over)])
    if not rows:
        return None
    return Table(["run", "chords", "median |error| / |ΔL| (Simpson)", "max (Simpson)", "max (first order)",
                  "tolerance run.lca_tol", "chords over it"], rows,
                 "error = the loss change not accounted for by the sum of the allocations along a chord")


def utilisation_text(runs: list[Path], label: str) -> Pre | None:
    from mvmammo.report.utilization import format_table, load_utilization

    results = [u for u in (load_utilization(r) for r in runs) if u]
    return Pre(format_table(results, label, "mean")) if results else None


def _blend_files(runs: list[Path], folders: list[Path]) -> list[Path]:
    files = [r / "blend_weights.json" for r in runs if (r / "blend_weights.json").is_file()]
    for f in folders:  # offline estimates: <experiment>/gblend_estimate*/blend_weights.json (not run folders)
        files += sorted(p for p in f.glob("*/blend_weights.json") if not (p.parent / "config.json").is_file())
    return list(dict.fromkeys(files))


def blending_section(runs: list[Path], folders: list[Path]) -> Section:
    from mvmammo.experiments.blend_estimate import weights_table

    sec = Section("blending", "Gradient-blending weights",
                  empty="no blended run (reg.blend) and no offline estimate (blend_weights.json)")
    files = _blend_files(runs, folders)
    if files:
        try:
            sec.add(Pre(weights_table(files)))
            sec.add(Text("weights (w_joint, w_cc, w_mlo) normalised to sum 1, mean ± std over seeds; estimates "
                         "list every (metric, window) they hold"))
        except (KeyError, ValueError, OSError) as exc:
            sec.add(Text(f"cannot read the blending weights ({type(exc).__name__}: {exc})"))
    return sec


def sweep_section(sweeps: list[Path], scratch: Path, label: str = "malignant") -> Section:
    from mvmammo.sweep import figures as sweep_figures

    sec = Section("sweep", "Sweeps", empty="the runs do not come from a sweep (no sweep.json)")
    for i, d in enumerate(sweeps):
        spec = json.loads((d / "sweep.json").read_text())
        sec.add(Text(f"{d}: experiment {spec.get('experiment')}, {spec.get('trials')} trials, "
                     f"{spec.get('sampler')} sampler, trial seeds {spec.get('trial_seeds')}"))
        best = d / "best.json"
        if best.is_file():
            b = json.loads(best.read_text())
            params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in (b.get("params") or {}).items())
            value = b.get("value")
            sec.add(Text(f"best trial {b.get('trial')} (slot {b.get('slot')}): {params}; validation "
                         f"{value:.4f}" if isinstance(value, (int, float)) and math.isfinite(value) else
                         f"best trial {b.get('trial')}: {params}"))
        for png in sorted(d.glob("*.png")):
            sec.add(png_figure(png, f"{d.name}: {png.name}"))
        if (d / "trials.json").is_file():
            try:
                sec.add(png_figure(sweep_figures.figure3([d], scratch / f"sweep{i}_figure3.png", label),
                                   f"{d.name}: train and validation AUC over the trials (Figure 3)"))
                sec.add(png_figure(sweep_figures.figure8(d, scratch / f"sweep{i}_figure8.png"),
                                   f"{d.name}: sampled learning rates (Figure 8)"))
            except MvError as exc:
                sec.add(Text(f"{d}: no sweep figures ({exc})"))
        else:
            sec.add(Text(f"{d}: no trials.json yet (the sweep has not finished)"))
    return sec
