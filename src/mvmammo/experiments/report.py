"""After an experiment: its table (printed and saved), its learning-curve figure and its HTML report."""
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


def write_html_report(out: Path, title: str | None = None) -> Path:
    """The experiment folder's HTML page (`mvmammo report OUT`): OUT/report.html; prints its path."""
    from mvmammo.report.html import write_report

    path = write_report([out], out / "report.html", title=title)
    print(f"report: {path} (one self-contained page; open it in a browser)")
    return path
