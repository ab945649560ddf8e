"""metrics.jsonl: one strict-JSON object per line, written by the training loop, read by everything else.

Strict: NaN and +-inf are written as null (``json.dumps`` would write bare ``NaN``, which is not JSON and which
other tools reject). Torn-write tolerant: a kill -9 or a full disk during a write can leave the last line
incomplete; readers skip lines that do not parse (and say how many when asked), and a resumed run drops them.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from mvmammo.atomic import write_text
from typing import Any


def clean(value: Any) -> Any:
    """``value`` with non-finite floats replaced by None (recursively through dicts and lists)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def dumps(record: dict) -> str:
    """One line of strict JSON (no trailing newline)."""
    return json.dumps(clean(record), allow_nan=False)


def read(path: str | Path) -> tuple[list[dict], int]:
    """(parsed records, number of lines skipped because they did not parse, e.g. a torn last line)."""
    path = Path(path)
    if not path.exists():
        return [], 0
    records, bad = [], 0
    with open(path, "rb") as f:
        for raw in f:
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(obj, dict):
                records.append(obj)
            else:
                bad += 1
    return records, bad


def records(path: str | Path) -> list[dict]:
    return read(path)[0]


def truncate(path: str | Path, keep_before_epoch: int) -> int:
    """Keep only whole lines of epochs < keep_before_epoch (a resume recomputes the rest); atomic rewrite.

    Returns the number of torn or unparsable lines dropped.
    """
    path = Path(path)
    if not path.exists():
        return 0
    recs, bad = read(path)
    kept = [r for r in recs if (r.get("epoch") or 0) < keep_before_epoch]
    write_text(path, "".join(dumps(r) + "\n" for r in kept))
    return bad
