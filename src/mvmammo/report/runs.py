"""Reading run folders for reports and plots (no torch here: plots read only files)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def read_metrics(run_dir: str | Path, kind: str = "epoch") -> pd.DataFrame:
    """The lines of metrics.jsonl of one kind ("epoch" or "step") as a table."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no metrics; is {run_dir} a run folder?")
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    return pd.DataFrame([r for r in rows if r.get("kind") == kind])
