"""The balance experiment's table (experiments/balance.py): per method, test AUC with CIs, the gap to the
synthetic oracle, view utilisation and the gradient-norm ratio, from run folders only (plus the utilisation
analysis, which loads best.pt).

Per run (one seed of one row):
  - test malignant AUC of the TTA-averaged breast-level predictions (predictions_test.csv);
  - view utilisation from utilization.json (analysis.utilization.analyze_run: test split, centre window,
    best.pt; the other view ablated by its TRAINING-set mean feature, v(empty) = 0.5): Shapley phi_cc,
    phi_mlo; conditional utilisation u(cc|mlo) = (A(both) - A(MLO kept)) / A(both), u(mlo|cc) symmetric;
  - gradient-norm ratio: the mean over training steps of grad_norm_cc / grad_norm_mlo (metrics.jsonl step
    lines, logged by the GradNormHook after the method's own gradient changes, before clipping); steps where
    either column has no gradient (a ReconBoost stage) are skipped; MLA, which trains one view per step: the
    ratio of the columns' mean norms; pretraining's head-only fine-tuning: none (frozen columns).
Per row (mean over its seeds), with two kinds of uncertainty:
  - CI of the seed-mean AUC: patient-level bootstrap over the test breasts (evaluation.metrics.bootstrap_aucs,
    the same resamples for every run, so each resample gives every seed's AUC; their mean's 2.5/97.5%
    percentiles). It covers test-set sampling for these trained models, not training variance (the +- sd
    over seeds shows that, from 3 seeds only);
  - delta vs Joint: the same resamples, paired (row's seed-mean AUC minus Joint's), percentile CI;
  - the seeds' ensemble (mean probability) with its DeLong 95% CI, as the paper tables (evaluation.tables).
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from mvmammo.atomic import write_text
from mvmammo.errors import MvError

N_BOOT = 2000
LABEL = "malignant"
UTIL_KEYS = ("phi_cc", "phi_mlo", "u_cc_given_mlo", "u_mlo_given_cc")


# ---------------------------------------------------------------- utilisation analyses (load models)
def _analyse(run: str) -> str:
    import torch

    from mvmammo.analysis.utilization import analyze_run

    torch.set_num_threads(1)  # several analyses side by side share the cores (as the runner's workers)
    # No linear probes: they are ~90% of an analysis (27 of 30 s per demo-scale run on one core, 2026-11-27)
    # and not part of the table; `mvmammo analyze utilization RUN` adds them (the table then shows them).
    analyze_run(run, split="test", probes=False)
    return run


def analyse_runs(runs, jobs: int | None = None) -> None:
    """utilization.json for every finished run that lacks it (``jobs`` side by side)."""
    from mvmammo.experiments.runner import default_jobs

    todo = [str(r) for r in runs if (Path(r) / "DONE").exists() and not (Path(r) / "utilization.json").exists()]
    jobs = jobs or default_jobs()
    if not todo:
        return
    print(f"view utilisation of {len(todo)} run(s) on {min(jobs, len(todo))} worker(s)", flush=True)
    if jobs == 1 or len(todo) == 1:
        for r in todo:
            _analyse(r)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_analyse, todo))


# ---------------------------------------------------------------- one run
def grad_ratio(run_dir: str | Path) -> float:
    """Mean over steps of grad_norm_cc / grad_norm_mlo, over the steps where both columns have a gradient.

    A method that trains one view per step (MLA) never has both: then the ratio of the two columns' mean norms,
    each over the steps that trained it. nan when a column never has a gradient (pretraining's head-only).
    """
    from mvmammo.report.runs import read_metrics

    steps = read_metrics(run_dir, "step")
    if "grad_norm_cc" not in steps or "grad_norm_mlo" not in steps:
        return float("nan")
    cc = pd.to_numeric(steps["grad_norm_cc"], errors="coerce").to_numpy(float)
    mlo = pd.to_numeric(steps["grad_norm_mlo"], errors="coerce").to_numpy(float)
    has_cc, has_mlo = np.isfinite(cc) & (cc > 0), np.isfinite(mlo) & (mlo > 0)
    both = has_cc & has_mlo
    if both.any():
        return float(np.mean(cc[both] / mlo[both]))
    if has_cc.any() and has_mlo.any():  # alternating updates
        return float(cc[has_cc].mean() / mlo[has_mlo].mean())
    return float("nan")


def run_record(run_dir: str | Path) -> dict:
    """What the table needs of one run: predictions (sorted by breast), utilisation, gradient ratio."""
    from mvmammo.evaluation.evaluate import load_predictions
    from mvmammo.evaluation.predict import breast_level
    from mvmammo.report.runs import row_name
    from mvmammo.report.utilization import load_utilization

    run_dir = Path(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    pred = breast_level(load_predictions(run_dir, "test")).sort_values("breast_id").reset_index(drop=True)
    rec = {"run": run_dir.name, "row": row_name(run_dir), "family": cfg["model"]["family"],
           "method": cfg["reg"].get("method", "none"), "pred": pred, "grad_ratio": grad_ratio(run_dir)}
    util = load_utilization(run_dir)
    lab = (util or {}).get("labels", {}).get(LABEL, {})
    mean = (lab.get("ablation") or {}).get("mean") or {}
    rec.update({k: mean.get(k, float("nan")) for k in UTIL_KEYS})
    rec["imbalance"] = mean.get("imbalance", float("nan"))
    probe = lab.get("probe") or {}
    for v in ("cc", "mlo"):
        rec[f"probe_{v}"] = (probe.get(v) or {}).get("auc", float("nan"))
    return rec


# ---------------------------------------------------------------- rows
def _boot(pred: pd.DataFrame, label: str) -> np.ndarray:
    from mvmammo.evaluation.metrics import bootstrap_aucs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return bootstrap_aucs(pred[label].to_numpy().astype(int), pred[f"p_{label}"].to_numpy(),
                              pred["patient_id"].astype(str).to_numpy(), n_boot=N_BOOT, seed=0)


def _ci(samples: np.ndarray) -> tuple[float, float]:
    ok = samples[np.isfinite(samples)]
    if not len(ok):
        return float("nan"), float("nan")
    lo, hi = np.quantile(ok, [0.025, 0.975])
    return float(lo), float(hi)


def _oracle_ref(oracle: dict | None, family: str) -> float:
    if not oracle:
        return float("nan")
    o = oracle.get(LABEL, oracle)
    key = {"uni_cc": "auc_cc", "uni_mlo": "auc_mlo"}.get(family, "auc_both")
    v = o.get(key)
    return float(v) if v is not None else float("nan")


def balance_table(runs, oracle: dict | None = None, preset: str = "?") -> dict:
    """{"preset", "oracle", "n_test", "rows": [one dict per row], "runs": [per-run values]}."""
    from mvmammo.evaluation.ensemble import ensemble
    from mvmammo.evaluation.metrics import auc, delong_ci

    recs = [run_record(r) for r in runs]
    if not recs:
        raise MvError("balance table: no runs; run `mvmammo experiment balance-<preset>` first")
    ids = recs[0]["pred"]["breast_id"].tolist()
    groups: dict[str, list[dict]] = {}
    for r in recs:
        if r["pred"]["breast_id"].tolist() != ids:
            raise MvError(f"balance table: run {r['run']} was evaluated on other test breasts than {recs[0]['run']};"
                          " a table holds the runs of one preset folder")
        r["auc"] = auc(r["pred"][LABEL].to_numpy().astype(int), r["pred"][f"p_{LABEL}"].to_numpy())
        r["auc_benign"] = auc(r["pred"]["benign"].to_numpy().astype(int), r["pred"]["p_benign"].to_numpy())
        groups.setdefault(r["row"], []).append(r)
    boots = {name: np.mean([_boot(m["pred"], LABEL) for m in members], axis=0) for name, members in groups.items()}
    rows = []
    for name, members in groups.items():
        a = np.array([m["auc"] for m in members])
        ens = ensemble([m["pred"] for m in members])
        y, s = ens[LABEL].to_numpy().astype(int), ens[f"p_{LABEL}"].to_numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            d_lo, d_hi = delong_ci(y, s)
        lo, hi = _ci(boots[name])
        ref = _oracle_ref(oracle, members[0]["family"])
        fam, method = members[0]["family"], members[0]["method"]
        kind = ("uni" if fam.startswith("uni_") else "later" if method != "none" else
                "baseline" if name == "joint" else "paper")  # paper: pretraining, split LRs, blending, ModDrop
        row = {"row": name, "kind": kind, "method": method, "family": fam, "seeds": len(members),
               "auc_mean": float(a.mean()), "auc_std": float(a.std(ddof=1)) if len(a) > 1 else float("nan"),
               "auc_lo": lo, "auc_hi": hi, "ens_auc": auc(y, s), "ens_delong_lo": d_lo, "ens_delong_hi": d_hi,
               "oracle": ref, "gap_to_oracle": float(a.mean()) - ref,
               "auc_benign_mean": float(np.mean([m["auc_benign"] for m in members]))}
        if "joint" in boots and name != "joint":
            row["delta_joint"] = row["auc_mean"] - float(np.mean([m["auc"] for m in groups["joint"]]))
            row["delta_lo"], row["delta_hi"] = _ci(boots[name] - boots["joint"])
        else:
            row["delta_joint"] = row["delta_lo"] = row["delta_hi"] = float("nan")
        for k in (*UTIL_KEYS, "imbalance", "grad_ratio"):  # probe AUCs (when analysed): per run, in the JSON
            vals = np.array([m[k] for m in members], float)
            row[k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
            row[f"{k}_std"] = float(np.nanstd(vals, ddof=1)) if np.isfinite(vals).sum() > 1 else float("nan")
        rows.append(row)
    first = recs[0]["pred"]
    return {"preset": preset, "label": LABEL, "oracle": (oracle or {}).get(LABEL), "n_boot": N_BOOT,
            "n_test": int(len(first)), "n_test_pos": int(first[LABEL].sum()),
            "n_test_patients": int(first["patient_id"].nunique()), "rows": rows,
            "runs": [{k: v for k, v in r.items() if k != "pred"} for r in recs]}


# ---------------------------------------------------------------- output
def _f(x, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def format_markdown(res: dict) -> str:
    o = res.get("oracle") or {}
    lines = [f"## Preset `{res['preset']}`: test {res['label']} AUC and view use",
             "",
             f"Test split: {res['n_test']} breasts ({res['n_test_pos']} {res['label']}) of {res['n_test_patients']} "
             f"patients. Oracle AUC (test): CC {_f(o.get('auc_cc'))}, MLO {_f(o.get('auc_mlo'))}, both "
             f"{_f(o.get('auc_both'))}.",
             f"AUC: mean +- sd over seeds of the TTA-averaged breast predictions; [95% CI]: patient bootstrap "
             f"({res['n_boot']} resamples) of the seed mean (test sampling only); delta vs Joint paired on the "
             "same resamples; ensemble: the seeds' mean probability with its DeLong 95% CI. Utilisation: test "
             "split, centre window, best.pt, the other view ablated by its training-mean feature; grad ratio: "
             "mean over steps of |g_CC| / |g_MLO| (columns + FCs).",
             "",
             "| method | family | n | AUC mean +- sd | [95% CI] | delta vs Joint [95% CI] | ensemble [DeLong 95% CI] "
             "| gap to oracle | phi_CC | phi_MLO | u(CC\\|MLO) | u(MLO\\|CC) | grad ratio CC/MLO |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        delta = "-" if not math.isfinite(r["delta_joint"]) else \
            f"{_f(r['delta_joint'], True)} [{_f(r['delta_lo'], True)}, {_f(r['delta_hi'], True)}]"
        lines.append(
            f"| {r['row']} | {r['family']} | {r['seeds']} | {_f(r['auc_mean'])} +- {_f(r['auc_std'])} "
            f"| [{_f(r['auc_lo'])}, {_f(r['auc_hi'])}] | {delta} "
            f"| {_f(r['ens_auc'])} [{_f(r['ens_delong_lo'])}, {_f(r['ens_delong_hi'])}] "
            f"| {_f(r['gap_to_oracle'], True)} | {_f(r['phi_cc'])} | {_f(r['phi_mlo'])} | {_f(r['u_cc_given_mlo'])} "
            f"| {_f(r['u_mlo_given_cc'])} | {_f(r['grad_ratio'])} |")
    return "\n".join(lines) + "\n"


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    raise TypeError(type(x))


def _nan_to_none(x):
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_table(res: dict, out: str | Path, stem: str = "balance_table") -> dict[str, Path]:
    """<stem>.md, <stem>.csv (one line per row) and <stem>.json (rows and per-run values), atomically."""
    out = Path(out)
    paths = {"md": out / f"{stem}.md", "csv": out / f"{stem}.csv", "json": out / f"{stem}.json"}
    write_text(paths["md"], format_markdown(res))
    write_text(paths["csv"], pd.DataFrame(res["rows"]).to_csv(index=False))
    write_text(paths["json"], json.dumps(_nan_to_none(res), indent=2, default=_json_default) + "\n")
    return paths
