"""preview.png: a montage of a few CC/MLO pairs with labels, lesion outlines and cue markers.

Reads the written cohort (exams.csv, lesions.csv, the PNGs), so it shows exactly what a model will see.
Outline colours: red = malignant, green = benign; solid = drawn in that view, dotted = obscured (not drawn);
a yellow square marks the spurious cue.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..images import read_png


def _pick(df: pd.DataFrame, n: int) -> list[int]:
    """Row positions: malignant, benign, both, normal first (where present), then the rest in order."""
    picks = []
    for cond in (df.malignant.eq(1) & df.benign.eq(0), df.benign.eq(1) & df.malignant.eq(0),
                 df.benign.eq(1) & df.malignant.eq(1), df.benign.eq(0) & df.malignant.eq(0),
                 df.malignant.eq(1)):
        idx = [i for i in np.flatnonzero(cond.to_numpy()) if i not in picks]
        if idx:
            picks.append(int(idx[0]))
    picks += [i for i in range(len(df)) if i not in picks]
    return picks[:n]


def write_preview(out_dir: str | Path, n: int = 6, path: str | Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, Rectangle

    out_dir = Path(out_dir)
    df = pd.read_csv(out_dir / "exams.csv", dtype={"patient_id": str, "exam_id": str})
    les = pd.read_csv(out_dir / "lesions.csv")
    rows = _pick(df, n)
    ncol = 3  # breasts per montage row, each as a CC | MLO pair
    nrow = int(np.ceil(len(rows) / ncol))
    fig, axes = plt.subplots(nrow, 2 * ncol, figsize=(2.1 * 2 * ncol, 3.4 * nrow), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, i in enumerate(rows):
        r = df.iloc[i]
        for j, v in enumerate(("cc", "mlo")):
            ax = axes[k // ncol, 2 * (k % ncol) + j]
            img = read_png(out_dir / r[f"{v}_path"])
            ax.imshow(img, cmap="gray", vmin=0, vmax=4095, interpolation="lanczos")
            for _, lr in les[les.breast_index == r.breast_index].iterrows():
                colour = "red" if lr.cls == "malignant" else "lime"
                ax.add_patch(Circle((lr[f"{v}_col"], lr[f"{v}_row"]), 1.6 * lr[f"{v}_radius_px"] + 2, fill=False,
                                    ec=colour, lw=0.9, ls="-" if lr[f"{v}_visible"] else ":"))
            if r[f"{v}_cue"]:
                s = 0.06 * img.shape[0]
                ax.add_patch(Rectangle((r[f"{v}_cue_col"] - s / 2, r[f"{v}_cue_row"] - s / 2), s, s, fill=False,
                                       ec="yellow", lw=0.8))
            lab = f"{'M' if r.malignant else '-'}{'B' if r.benign else '-'}"
            ax.set_title(f"{r.patient_id} {r.side} {v.upper()}\n{lab} dens {r.density} ({r.split})", fontsize=7)
    fig.suptitle("synthetic cohort (M malignant, B benign; red/green outline: drawn, dotted: obscured; "
                 "yellow: cue)", fontsize=8)
    fig.tight_layout()
    path = Path(path) if path else out_dir / "preview.png"
    fig.savefig(path, dpi=130, facecolor="white")
    plt.close(fig)
    return path
