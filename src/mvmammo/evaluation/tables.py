"""Paper-style tables from run folders: mean +- std over seeds, the ensemble of the seeds, CIs.

Runs are grouped into rows by folder name: ``<row>-s<seed>`` (e.g. joint-s0, joint-s1, joint-s2 -> row
"joint"); a folder without the suffix is its own row.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mvmammo import LABELS
from mvmammo.evaluation.ensemble import ensemble
from mvmammo.evaluation.evaluate import auc_report, load_predictions
from mvmammo.evaluation.loading import RunError
from mvmammo.evaluation.metrics import auc
from mvmammo.report.runs import group_runs


def table(runs: list[str | Path], split: str = "test", n_boot: int = 1000) -> pd.DataFrame:
    """One line per row: per-seed AUC mean/std and the ensemble AUC with DeLong and bootstrap CIs."""
    lines = []
    for name, members in group_runs(runs).items():
        preds = [load_predictions(m, split) for m in members]
        line = {"row": name, "seeds": len(members)}
        try:
            ens = ensemble(preds)
        except ValueError as exc:
            raise RunError(f"row {name!r} ({', '.join(str(m) for m in members)}): {exc} for {split!r}; evaluate "
                           "every seed of a row on the same table and split") from None
        rep = auc_report(ens, n_boot=n_boot)
        for label in LABELS:
            per_seed = []
            for p in preds:
                b = p[p["tta_index"] == -1]
                per_seed.append(auc(b[label].to_numpy().astype(int), b[f"p_{label}"].to_numpy()))
            line[f"{label}_mean"] = float(np.mean(per_seed))
            line[f"{label}_std"] = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else float("nan")
            r = rep[label]
            line[f"{label}_ens"] = r["auc"]
            line[f"{label}_ens_delong_lo"], line[f"{label}_ens_delong_hi"] = r["delong_lo"], r["delong_hi"]
            line[f"{label}_ens_boot_lo"], line[f"{label}_ens_boot_hi"] = r["boot_lo"], r["boot_hi"]
        lines.append(line)
    return pd.DataFrame(lines)


def format_table(df: pd.DataFrame, oracle: dict | None = None, label: str = "malignant") -> str:
    """A text table like the paper's: AUC mean +- std over seeds, ensemble with 95% CIs, gap to oracle."""
    head = f"{'model':<28} {'seeds':>5}  {label + ' AUC (mean +- std)':>26}  {'ensemble [DeLong 95% CI]':>26}" \
           f"  {'bootstrap 95% CI':>16}"
    other = "benign" if label == "malignant" else "malignant"
    head += f"  {other + ' AUC':>17}"
    if oracle:
        head += f"  {'gap to oracle':>13}"
    out = [head, "-" * len(head)]
    for _, r in df.iterrows():
        s = (f"{r['row']:<28} {int(r['seeds']):>5}  {r[label + '_mean']:>17.3f} +- {r[label + '_std']:.3f}"
             f"  {r[label + '_ens']:>8.3f} [{r[label + '_ens_delong_lo']:.3f}, {r[label + '_ens_delong_hi']:.3f}]"
             f"  [{r[label + '_ens_boot_lo']:.3f}, {r[label + '_ens_boot_hi']:.3f}]"
             f"  {r[other + '_mean']:>9.3f} +- {r[other + '_std']:.3f}")
        if oracle:
            ref = oracle_for_row(str(r["row"]), oracle, label)
            s += f"  {r[label + '_mean'] - ref:>+13.3f}" if ref is not None else f"  {'':>13}"
        out.append(s)
    return "\n".join(out)


def oracle_for_row(row: str, oracle: dict, label: str = "malignant") -> float | None:
    """The oracle AUC a row should be compared with: the CC, MLO or both-view oracle by the row's views."""
    o = oracle.get(label, oracle)
    key = "auc_cc" if "uni_cc" in row or row.endswith("cc") else "auc_mlo" if "uni_mlo" in row else "auc_both"
    v = o.get(key)
    return float(v) if v is not None else None


def load_oracle_file(path: str | Path | None) -> dict | None:
    if not path:
        return None
    return json.loads(Path(path).read_text())
