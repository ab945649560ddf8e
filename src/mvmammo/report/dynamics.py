"""Training-dynamics figures from run folders: gradient norm per column over training (the paper's Figures
4a/6a/7a) and cumulative Loss Change Allocation per column (Figures 4b/6b/7b). Matplotlib only, no torch.

Runs are grouped into rows by folder name (<row>-s<seed>); each row gets one panel, with the mean over its
seeds and a +-1 std band. Colours follow the paper: CC blue, MLO orange; shared parameters grey.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mvmammo.report.runs import group_runs, read_lca, read_metrics  # noqa: E402

COLORS = {"cc": "#1f77b4", "mlo": "#ff7f0e", "shared": "#7f7f7f", "aux_cc": "#9ecae1", "aux_mlo": "#fdbe85"}
LABELS = {"cc": "CC column", "mlo": "MLO column", "shared": "shared", "aux_cc": "aux head CC",
          "aux_mlo": "aux head MLO"}


def _order(groups) -> list[str]:
    return sorted(groups, key=lambda g: list(COLORS).index(g) if g in COLORS else len(COLORS))


def _panels(n: int, height: float = 3.6, width: float = 5.2):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, axes[0]


def _mean_band(ax, x, ys, color, label, log: bool = False):
    ys = np.asarray(ys, dtype=float)
    if log:  # average in log space: norms span decades, a geometric mean is the honest centre
        ys = np.log10(np.clip(ys, 1e-30, None))
    mean = ys.mean(0)
    std = ys.std(0) if len(ys) > 1 else None
    f = (lambda v: 10 ** v) if log else (lambda v: v)
    ax.plot(x, f(mean), color=color, label=label, linewidth=1.4)
    if std is not None:
        ax.fill_between(x, f(mean - std), f(mean + std), color=color, alpha=0.2, linewidth=0)


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average (window in steps), shorter at the ends."""
    return pd.Series(y).rolling(window, center=True, min_periods=1).mean().to_numpy()


def grad_norm_figure(runs, out: str | Path, relative: bool = False, window: int | None = None) -> Path | None:
    """||dL/d theta_g|| per group g over training steps, smoothed, log scale; None when no run logged them."""
    key = "rel_grad_norm_" if relative else "grad_norm_"
    rows = {}
    for name, members in group_runs(runs).items():
        tables = [t for t in (read_metrics(m, "step") for m in members) if not t.empty]
        cols = [c[len(key):] for c in (tables[0].columns if tables else []) if c.startswith(key)]
        if cols:
            rows[name] = (tables, cols)
    if not rows:
        return None
    fig, axes = _panels(len(rows))
    for ax, (name, (tables, groups)) in zip(axes, rows.items()):
        n = min(len(t) for t in tables)
        w = window or max(1, n // 40)
        x = tables[0]["step"].to_numpy()[:n]
        for g in _order(groups):
            ys = [smooth(t[key + g].to_numpy(dtype=float)[:n], w) for t in tables]
            _mean_band(ax, x, ys, COLORS.get(g, "k"), LABELS.get(g, g), log=True)
        ax.set_yscale("log")
        ax.set_title(f"{name} (n={len(tables)} seed{'s' if len(tables) > 1 else ''})")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("||g|| / ||theta||" if relative else "||dL/d theta||")
    fig.suptitle(("relative gradient norm" if relative else "gradient norm") + " per column (minibatch loss, "
                 f"every step; moving average over {w} steps, log scale)", fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


def lca_figure(runs, out: str | Path) -> Path | None:
    """Cumulative LCA per group (left panels) and the approximation error per chord (right panel).

    Cumulative LCA_g(step) = sum over chords ending by step of sum_{i in g} LCA_i; negative = the group
    lowered the loss on the fixed subsample. The black line is the actual cumulative loss change along the
    chords (sum of L(b) - L(a)); the groups plus the error add up to it.
    """
    rows = {}
    for name, members in group_runs(runs).items():
        tables = [t for t in (read_lca(m) for m in members) if not t.empty]
        if tables:
            rows[name] = tables
    if not rows:
        return None
    fig, axes = _panels(len(rows) + 1)
    for ax, (name, tables) in zip(axes, rows.items()):
        n = min(len(t) for t in tables)
        x = np.r_[0, tables[0]["step_b"].to_numpy()[:n]]
        groups = [c[4:] for c in tables[0].columns if c.startswith("lca_") and not c.startswith("lca_fo_")]
        for g in _order(groups):
            ys = [np.r_[0, np.cumsum(t[f"lca_{g}"].to_numpy(dtype=float)[:n])] for t in tables]
            _mean_band(ax, x, ys, COLORS.get(g, "k"), LABELS.get(g, g))
        total = [np.r_[0, np.cumsum(t["delta"].to_numpy(dtype=float)[:n])] for t in tables]
        _mean_band(ax, x, total, "k", "actual loss change (sum of chords)")
        ax.axhline(0, color="k", linewidth=0.5)
        ax.set_title(f"{name}: cumulative LCA (n={len(tables)})")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("cumulative loss change on the subsample\n(negative = helped)")
    ax = axes[-1]
    for i, (name, tables) in enumerate(rows.items()):
        t = pd.concat(tables)
        ax.scatter(t["step_b"], t["err_ratio"].clip(lower=1e-6), s=12, label=f"{name} Simpson", alpha=0.8,
                   color=f"C{i}")
        ax.scatter(t["step_b"], t["err_fo_ratio"].clip(lower=1e-6), s=12, marker="x", alpha=0.6,
                   label=f"{name} first order", color=f"C{i}")
    tol = _tol(runs)
    if tol:
        ax.axhline(tol, color="r", linestyle="--", linewidth=1, label=f"tolerance {tol:g}")
    ax.set_yscale("log")
    ax.set_title("|approximation error| / |loss change| per chord")
    ax.set_xlabel("training step")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out)


def _tol(runs) -> float | None:
    import json

    for r in runs:
        p = Path(r) / "config.json"
        if p.exists() and (Path(r) / "lca.jsonl").exists():
            return json.loads(p.read_text()).get("run", {}).get("lca_tol")
    return None


def _save(fig, out) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
