"""Reading run folders for reports and plots (no torch here: plots read only files)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from mvmammo import runlog


def read_metrics(run_dir: str | Path, kind: str = "epoch") -> pd.DataFrame:
    """The lines of metrics.jsonl of one kind ("epoch" or "step") as a table."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no metrics; is {run_dir} a run folder?")
    rows = runlog.records(path)  # a torn last line (a killed run) is skipped
    return pd.DataFrame([r for r in rows if r.get("kind") == kind])


_SEED = re.compile(r"^(.*)-s\d+$")


def row_name(run_dir: str | Path) -> str:
    """Runs <row>-s<seed> belong to row <row>; any other folder name is its own row."""
    m = _SEED.match(Path(run_dir).name)
    return m.group(1) if m else Path(run_dir).name


def group_runs(runs) -> dict[str, list[Path]]:
    """{row: [run folders]} in the order first seen (tables and figures group runs this way)."""
    rows: dict[str, list[Path]] = {}
    for r in runs:
        rows.setdefault(row_name(r), []).append(Path(r))
    return rows


def read_lca(run_dir: str | Path) -> pd.DataFrame:
    """The chords of lca.jsonl (empty table when the run had run.lca off)."""
    path = Path(run_dir) / "lca.jsonl"
    if not path.exists():
        return pd.DataFrame()
    return pd.DataFrame(runlog.records(path))


def family(run_dir: str | Path) -> str:
    """model.family from the run's config.json ('' when absent)."""
    path = Path(run_dir) / "config.json"
    return json.loads(path.read_text()).get("model", {}).get("family", "") if path.exists() else ""
