"""After an experiment: its table (printed and saved) and its learning-curve figure."""
from __future__ import annotations

import json
from pathlib import Path

from mvmammo.experiments import Experiment


def find_oracle(out: Path) -> dict | None:
    """The oracle.json of the synthetic cohort the runs used (under the experiment's cache), if any."""
    found = sorted((out / "_cache").glob("synth-*/oracle.json"))
    return json.loads(found[0].read_text()) if found else None


def report_experiment(exp: Experiment, runs: list[Path], out: Path) -> str:
    from mvmammo.evaluation.tables import format_table, table
    from mvmammo.report.plots import learning_curves

    df = table(runs)
    df.to_csv(out / f"{exp.name}.csv", index=False)
    text = format_table(df, find_oracle(out))
    title = f"{exp.reproduces}: test AUC on the synthetic cohort ({len(df)} rows)"
    full = f"{title}\n{text}\n"
    (out / f"{exp.name}.txt").write_text(full)
    print(full)
    fig = learning_curves(runs, out / f"{exp.name}_learning_curves.png")
    print(f"learning curves: {fig}")
    return full
