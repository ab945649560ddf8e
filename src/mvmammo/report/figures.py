"""Every figure that a set of run folders has data for (used by `mvmammo plot` and the demo)."""
from __future__ import annotations

from pathlib import Path

from mvmammo.report.dynamics import grad_norm_figure, lca_figure
from mvmammo.report.plots import learning_curves, utilization_figure
from mvmammo.report.runs import family


def all_figures(runs, out: Path, label: str = "malignant", prefix: str = "") -> dict[str, Path | None]:
    """{figure name: path or None (no data)}. Learning curves are of the uni-view runs (the paper's
    Figure 3) when there are any, else of all runs."""
    out.mkdir(parents=True, exist_ok=True)
    runs = [Path(r) for r in runs]
    logged = [r for r in runs if (r / "metrics.jsonl").exists()]
    curves = [r for r in logged if family(r).startswith("uni_")] or logged
    return {
        "learning curves": learning_curves(curves, out / f"{prefix}learning_curves.png", label) if curves else None,
        "gradient norms": grad_norm_figure(logged, out / f"{prefix}grad_norms.png"),
        "relative gradient norms": grad_norm_figure(logged, out / f"{prefix}rel_grad_norms.png", relative=True),
        "loss change allocation": lca_figure(runs, out / f"{prefix}lca.png"),
        "view utilisation": utilization_figure(runs, out / f"{prefix}utilization.png", label),
    }
