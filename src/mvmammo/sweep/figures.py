"""Figures 3 and 8 of the paper from sweep folders (matplotlib; reads files only, no torch).

Figure 3: train (blue) and validation (orange) malignant AUC per epoch, mean +- one standard deviation over
the sweep's trials (the paper: ten uni-view models with learning rates log-uniform in [1e-5, 3e-3]); one
panel per sweep folder (e.g. lr-uni_cc and lr-uni_mlo). A trial with several seeds counts once (its seeds'
mean per epoch). Figure 8: the sampled learning rates of each model component, eta_g = lr * 10**alpha_g,
read from the trials' resolved config.json.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from mvmammo import runlog
from mvmammo.errors import MvError


def load_trials(sweep_dir: str | Path) -> dict:
    path = Path(sweep_dir) / "trials.json"
    if not path.exists():
        raise MvError(f"{path}: not found; run `mvmammo sweep` on {sweep_dir} (it writes trials.json)")
    return json.loads(path.read_text())


def _epoch_values(run: Path, key: str) -> dict[int, float]:
    recs, _ = runlog.read(run / "metrics.jsonl")  # a torn last line is skipped
    out = {}
    for r in recs:
        v = r.get(key)
        if r.get("kind") == "epoch" and isinstance(v, (int, float)) and math.isfinite(float(v)):
            out[int(r["epoch"])] = float(v)
    return out


def curves(sweep_dir: str | Path, key: str) -> list[dict[int, float]]:
    """Per trial (slot): {epoch: value} averaged over the trial's seed runs."""
    sweep_dir = Path(sweep_dir)
    out = []
    for t in load_trials(sweep_dir)["trials"]:
        per_run = [_epoch_values(sweep_dir / r, key) for r in t["runs"] if (sweep_dir / r / "metrics.jsonl").exists()]
        per_run = [c for c in per_run if c]
        if not per_run:
            continue
        epochs = sorted(set.intersection(*(set(c) for c in per_run)))
        out.append({e: float(np.mean([c[e] for c in per_run])) for e in epochs})
    return out


def band(trial_curves: list[dict[int, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(epochs, mean, std, n) over the trials that reached each epoch; std is the sample std (0 for n=1)."""
    epochs = sorted(set().union(*(set(c) for c in trial_curves))) if trial_curves else []
    mean, std, n = [], [], []
    for e in epochs:
        v = np.array([c[e] for c in trial_curves if e in c])
        mean.append(v.mean())
        std.append(v.std(ddof=1) if len(v) > 1 else 0.0)
        n.append(len(v))
    return np.array(epochs) + 1, np.array(mean), np.array(std), np.array(n)  # epochs 1-based, as in the paper


def figure3(sweep_dirs: list[str | Path], out: str | Path, label: str = "malignant") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(sweep_dirs), figsize=(4.5 * len(sweep_dirs), 3.4), squeeze=False)
    for ax, d in zip(axes[0], sweep_dirs):
        for key, color, name in ((f"train_auc_{label}", "tab:blue", "train"),
                                 (f"val_auc_{label}", "tab:orange", "validation")):
            cs = curves(d, key)
            x, m, s, n = band(cs)
            if len(x) == 0:
                continue
            ax.plot(x, m, color=color, label=f"{name} (n={len(cs)})")
            ax.fill_between(x, m - s, m + s, color=color, alpha=0.25, linewidth=0)
        ax.set_title(load_trials(d).get("experiment", Path(d).name))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{label} AUC")
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("Train and validation AUC, mean +- std over the sampled learning rates", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def sampled_rates(sweep_dir: str | Path) -> dict[str, list[float]]:
    """{component: [eta]} per trial, from the first run folder's config.json (lr * 10**alpha_g)."""
    sweep_dir = Path(sweep_dir)
    rates: dict[str, list[float]] = {"cc": [], "mlo": [], "shared": []}
    for t in load_trials(sweep_dir)["trials"]:
        cfg_path = next((sweep_dir / r / "config.json" for r in t["runs"] if (sweep_dir / r / "config.json").exists()),
                        None)
        if cfg_path is None:
            continue
        optim = json.loads(cfg_path.read_text())["optim"]
        for g in rates:
            rates[g].append(float(optim["lr"]) * 10.0 ** float(optim.get(f"alpha_{g}", 0.0)))
    return rates


def figure8(sweep_dir: str | Path, out: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = sampled_rates(sweep_dir)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3), sharey=True)
    all_r = [r for v in rates.values() for r in v]
    lo, hi = (math.log10(min(all_r)) - 0.1, math.log10(max(all_r)) + 0.1) if all_r else (-6, -2)
    bins = np.logspace(lo, hi, 11)
    for ax, (g, v) in zip(axes, rates.items()):
        ax.hist(v, bins=bins, color="tab:green", edgecolor="black")
        ax.set_xscale("log")
        ax.set_title(f"eta_{g} (n={len(v)})")
        ax.set_xlabel("learning rate")
    axes[0].set_ylabel("trials")
    fig.suptitle(f"Sampled learning rates per model component: {load_trials(sweep_dir).get('experiment', '')}",
                 fontsize=9)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
