"""Figures from run folders (matplotlib, Agg backend; no torch import)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mvmammo.evaluation.tables import group_runs  # noqa: E402
from mvmammo.report.runs import read_metrics  # noqa: E402


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
