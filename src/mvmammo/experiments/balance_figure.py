"""The balance experiment's figure (one per preset): per method, the test AUC with its 95% CI against Joint
and the oracle, the Shapley view contributions and the conditional utilisation (matplotlib, Agg; no torch)."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

CC, MLO = "#1f77b4", "#ff7f0e"


def _nan(x) -> float:
    return float("nan") if x is None else float(x)


def balance_figure(res: dict, out: str | Path) -> Path:
    """Three panels sharing the method axis (top to bottom in the table's order): AUC mean over seeds with
    the patient-bootstrap 95% CI (dashed: Joint's mean; dotted: the oracle of both views), phi_CC and phi_MLO,
    u(CC|MLO) and u(MLO|CC). Uni-view rows have no utilisation (empty bars). Dot colours: grey uni-view,
    green Joint, red the paper's regularizers, purple the later methods."""
    rows = res["rows"]
    names = [r["row"] for r in rows]
    y = np.arange(len(rows))[::-1]  # first row on top
    height = 0.38 * len(rows) + 2.0  # inches
    fig, axes = plt.subplots(1, 3, figsize=(14, height), sharey=True, gridspec_kw={"width_ratios": [1.4, 1, 1]})
    below = (0.5, -0.65 / (0.8 * height))  # legends ~0.65 in under each axes (below the tick labels and x label)
    ax = axes[0]
    mean = np.array([_nan(r["auc_mean"]) for r in rows])
    lo = np.array([_nan(r["auc_lo"]) for r in rows])
    hi = np.array([_nan(r["auc_hi"]) for r in rows])
    err = np.vstack([np.where(np.isfinite(lo), mean - lo, 0), np.where(np.isfinite(hi), hi - mean, 0)])
    kinds = {"uni": "0.5", "baseline": "#2ca02c", "paper": "#d62728", "later": "#9467bd"}
    colors = [kinds.get(r.get("kind"), "k") for r in rows]
    ax.errorbar(mean, y, xerr=np.clip(err, 0, None), fmt="none", ecolor="0.3", capsize=3, linewidth=1)
    ax.scatter(mean, y, c=colors, zorder=3, s=30)
    joint = next((r for r in rows if r["row"] == "joint"), None)
    if joint is not None and math.isfinite(_nan(joint["auc_mean"])):
        ax.axvline(joint["auc_mean"], color="#2ca02c", linestyle="--", linewidth=1, label="Joint (mean)")
    both = (res.get("oracle") or {}).get("auc_both")
    if both is not None:
        ax.axvline(both, color="k", linestyle=":", linewidth=1, label="oracle, both views")
    ax.set_xlabel(f"test {res['label']} AUC (mean over seeds, 95% CI)")
    ax.set_title(f"preset {res['preset']}: AUC", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=below, ncol=2, frameon=False)
    h = 0.38
    for ax, (a, b), title in ((axes[1], ("phi_cc", "phi_mlo"), "Shapley contribution (AUC above 0.5)"),
                              (axes[2], ("u_cc_given_mlo", "u_mlo_given_cc"), "conditional utilisation")):
        va = np.array([_nan(r[a]) for r in rows])
        vb = np.array([_nan(r[b]) for r in rows])
        ax.barh(y + h / 2, np.nan_to_num(va), h, color=CC, label=a.replace("_given_", "|").replace("phi_", "phi "))
        ax.barh(y - h / 2, np.nan_to_num(vb), h, color=MLO, label=b.replace("_given_", "|").replace("phi_", "phi "))
        ax.axvline(0, color="k", linewidth=0.8)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="x")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=below, ncol=2, frameon=False)
    axes[0].grid(alpha=0.3, axis="x")
    axes[0].set_yticks(y, names, fontsize=8)
    fig.tight_layout()
    out = Path(out)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")  # atomic: a reader never sees half a PNG
    fig.savefig(tmp, dpi=120, bbox_inches="tight")  # keeps the legends below the axes
    plt.close(fig)
    tmp.replace(out)
    return out
