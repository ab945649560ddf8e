"""The view-utilisation table from utilization.json files (no torch: reads run folders only)."""
from __future__ import annotations

import json
import math
from pathlib import Path


def load_utilization(run_dir: str | Path, split: str = "test") -> dict | None:
    name = "utilization.json" if split == "test" else f"utilization_{split}.json"
    path = Path(run_dir) / name
    return json.loads(path.read_text()) if path.exists() else None


def _f(x, width: int = 7, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return f"{'-':>{width}}"
    return f"{x:+{width}.3f}" if signed else f"{x:{width}.3f}"


def format_table(results: list[dict], label: str = "malignant", mode: str = "mean") -> str:
    """One line per run: AUC with both views and with one view kept (other ablated by ``mode``),
    conditional utilisation, Shapley contributions and imbalance, linear-probe AUCs."""
    head = (f"{'run':<22} {'family':<8} {'A(both)':>7} {'A(CC)':>7} {'A(MLO)':>7} {'u(M|C)':>7} {'u(C|M)':>7} "
            f"{'phi_CC':>7} {'phi_MLO':>7} {'imbal':>6} {'probeCC':>7} {'probeMLO':>8}")
    lines = [f"view utilisation, {label} AUC on the {results[0]['split'] if results else '?'} split "
             f"(centre window; the other view ablated by the {mode} feature; v(empty) = 0.5)", head,
             "-" * len(head)]
    for r in results:
        lab = r["labels"][label]
        probe = lab.get("probe") or {}
        pc = (probe.get("cc") or {}).get("auc")
        pm = (probe.get("mlo") or {}).get("auc")
        if lab.get("ablation"):
            ab = lab["ablation"][mode]
            cols = [lab["auc_both"], ab["auc_cc_only"], ab["auc_mlo_only"], ab["u_mlo_given_cc"],
                    ab["u_cc_given_mlo"], ab["phi_cc"], ab["phi_mlo"]]
            imb = _f(ab["imbalance"], 6)
        else:  # uni-view: only its own AUC applies
            cols = [None, lab.get("auc_cc_only"), lab.get("auc_mlo_only"), None, None, None, None]
            imb = _f(None, 6)
        signed = [False, False, False, True, True, True, True]
        body = " ".join(_f(c, 7, s) for c, s in zip(cols, signed))
        lines.append(f"{r['run'][:22]:<22} {r['family'][:8]:<8} {body} {imb} {_f(pc)} {_f(pm, 8)}")
    lines.append("u(M|C) = (A(both) - A(CC)) / A(both): the share of the AUC lost without MLO; "
                 "phi = 2-player Shapley (sum = A(both) - 0.5)")
    return "\n".join(lines)
