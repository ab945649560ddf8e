"""Figures from run folders (matplotlib, Agg backend; no torch import)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mvmammo.report.runs import group_runs, read_metrics  # noqa: E402
from mvmammo.report.utilization import load_utilization  # noqa: E402


def _band(ax, x, ys, color, label, style="-"):
    ys = np.asarray(ys, dtype=float)
    mean = np.nanmean(ys, axis=0)
    ax.plot(x, mean, style, color=color, label=label)
    if ys.shape[0] > 1:
        std = np.nanstd(ys, axis=0)
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)


def learning_curves(runs: list[str | Path], out: str | Path, label: str = "malignant") -> Path:
    """Train and validation AUC per epoch, mean +- std band over the seeds of each row (the paper's Figure 3).

    Train AUC is measured on each epoch's own (augmented, downsampled) training batches as they are seen.
    """
    groups = group_runs(runs)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, members) in enumerate(groups.items()):
        tables = [read_metrics(m) for m in members]
        n = min(len(t) for t in tables)
        if n == 0:
            continue
        x = np.arange(1, n + 1)
        for ax, split in zip(axes, ("train", "val")):
            ys = [t[f"{split}_auc_{label}"].to_numpy()[:n] for t in tables]
            _band(ax, x, ys, colors[i % len(colors)], f"{name} (n={len(members)})")
    for ax, split in zip(axes, ("training", "validation")):
        ax.set_title(f"{split} AUC ({label})")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("AUC")
    axes[1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _value(lab: dict, key: str, mode: str) -> float:
    return lab["auc_both"] if key == "auc_both" else lab["ablation"][mode][key]


def utilization_figure(runs: list[str | Path], out: str | Path, label: str = "malignant", mode: str = "mean"
                       ) -> Path | None:
    """Bars per row (mean +- std over seeds) from utilization.json: AUC with both views and with one view
    kept (the other ablated by ``mode``), and the two Shapley contributions. None when no run has the file."""
    rows = {}
    for name, members in group_runs(runs).items():
        res = [r for r in (load_utilization(m) for m in members) if r and r["labels"][label].get("ablation")]
        if res:
            rows[name] = res
    if not rows:
        return None
    keys = [("auc_both", "both views", "#2ca02c"), ("auc_cc_only", "CC only (MLO ablated)", "#1f77b4"),
            ("auc_mlo_only", "MLO only (CC ablated)", "#ff7f0e")]
    phis = [("phi_cc", "phi CC", "#1f77b4"), ("phi_mlo", "phi MLO", "#ff7f0e")]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 2.4 * len(rows) + 4), 3.8))
    x = np.arange(len(rows))
    for ax, group in zip(axes, (keys, phis)):
        width = 0.8 / len(group)
        for k, (key, text, color) in enumerate(group):
            vals = [[_value(r["labels"][label], key, mode) for r in res] for res in rows.values()]
            mean = [np.nanmean(v) for v in vals]
            std = [np.nanstd(v) if len(v) > 1 else 0.0 for v in vals]
            ax.bar(x + (k - (len(group) - 1) / 2) * width, mean, width, color=color, label=text,
                   yerr=std if max(std) > 0 else None, capsize=3)
        ax.set_xticks(x, [f"{n} (n={len(r)})" for n, r in rows.items()], fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    axes[0].axhline(0.5, color="k", linewidth=0.8, linestyle=":")
    axes[0].set_ylim(0.0, 1.0)
    axes[0].set_ylabel(f"test AUC ({label})")
    axes[0].set_title(f"AUC with one view ablated ({mode} feature)", fontsize=10)
    axes[1].axhline(0, color="k", linewidth=0.8)
    axes[1].set_ylabel("Shapley contribution (AUC)")
    axes[1].set_title("Shapley view contributions (phi_CC + phi_MLO = AUC - 0.5)", fontsize=10)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
