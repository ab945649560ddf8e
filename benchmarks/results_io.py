"""Where a benchmark's result goes: one JSON file (written atomically) under benchmarks/results/ or a folder
given on the command line, and the same JSON on stdout."""
from __future__ import annotations

import json
from pathlib import Path

from mvmammo.atomic import write_text

RESULTS = Path(__file__).resolve().parent / "results"


def save_result(result: dict, name: str, out: str | Path | None = None) -> dict:
    """Write ``result`` to <out or benchmarks/results>/<name>, print it, and return it."""
    folder = Path(out) if out else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2) + "\n"
    write_text(folder / name, text)
    print(text, end="")
    return result
