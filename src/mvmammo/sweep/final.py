"""After the search: the best set by mean validation AUC over seeds, its seed runs, the test table.

The best trial's runs already hold its trial seeds; the missing final seeds are trained into the same
``trials/t<slot>-s<seed>`` folders (so with trial seeds 0,1,2, as in the paper, nothing more is trained).
Writes SWEEP/trials.json (one line per slot, read by the figures), best.json, test_table.txt/.csv.
"""
from __future__ import annotations

import json
from pathlib import Path

from mvmammo.errors import MvError
from mvmammo.atomic import write_text
from mvmammo.sweep import study as st
from mvmammo.sweep.worker import best_val_auc, run_dir, train_run, trial_config


def trials_summary(spec: st.SweepSpec, study) -> list[dict]:
    """One record per slot (its latest attempt): state, value, params, run folders, attempts."""
    trials = study.get_trials(deepcopy=False)
    latest = st.latest_by_slot(trials)
    out = []
    for slot, t in sorted(latest.items()):
        attempts = [u.number for u in trials if st.slot_of(u) == slot]
        out.append({"slot": slot, "trial": t.number, "state": t.state.name, "value": t.value,
                    "params": dict(t.params), "attempts": attempts,
                    "runs": [str(run_dir(spec.out, slot, s).relative_to(spec.out)) for s in spec.trial_seeds],
                    "fail_reason": t.system_attrs.get(st.FAIL_REASON)})
    write_text(Path(spec.out) / "trials.json", json.dumps({"experiment": spec.experiment, "preset": spec.preset,
                                                              "overrides": spec.overrides, "trials": out},
                                                             indent=2) + "\n")
    return out


def finish(spec: st.SweepSpec, study, progress: bool = False, n_boot: int = 1000) -> dict:
    """Best set, seed runs at it (trained here when missing), test evaluation and table; returns best.json."""
    from mvmammo.evaluation.evaluate import evaluate_run
    from mvmammo.evaluation.tables import format_table, table

    summary = trials_summary(spec, study)
    done = [r for r in summary if r["state"] == "COMPLETE" and r["value"] is not None]
    if not done:
        raise MvError(f"{spec.out}: no trial completed (see {Path(spec.out) / 'trials.json'} for the failure reasons)")
    best = max(done, key=lambda r: r["value"])
    runs = []
    for seed in spec.final_seeds:
        out = run_dir(spec.out, best["slot"], seed)
        if not (out / "DONE").exists():
            train_run(spec, trial_config(spec, best["params"], out, seed, progress=progress))
        if not (out / "metrics_test.json").exists():
            evaluate_run(out, split="test", n_boot=n_boot)
        runs.append(out)
    df = table(runs, split="test", n_boot=n_boot)
    df["row"] = f"{spec.experiment} (slot {best['slot']})"
    text = format_table(df)
    out_dir = Path(spec.out)
    write_text(out_dir / "test_table.txt", text + "\n")
    write_text(out_dir / "test_table.csv", df.to_csv(index=False))
    seed_val = {str(s): best_val_auc(r) for s, r in zip(spec.final_seeds, runs)}
    result = {"experiment": spec.experiment, "slot": best["slot"], "trial": best["trial"], "params": best["params"],
              "value": best["value"], "trial_seeds": spec.trial_seeds, "final_seeds": spec.final_seeds,
              "val_auc_by_seed": seed_val,
              "val_auc_mean_final_seeds": sum(seed_val.values()) / len(seed_val),
              "runs": [str(r) for r in runs],
              "test_malignant_mean": float(df["malignant_mean"].iloc[0]),
              "test_malignant_std": float(df["malignant_std"].iloc[0]),
              "test_malignant_ensemble": float(df["malignant_ens"].iloc[0])}
    write_text(out_dir / "best.json", json.dumps(result, indent=2) + "\n")
    return result
