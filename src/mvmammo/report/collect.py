"""What a report covers: the paths given to `mvmammo report`, expanded to run folders and grouped.

A path is a run folder (it has config.json), an experiment folder (a folder of run folders, such as
runs/table1 with <row>-s<seed> subfolders, or the demo's folder holding several experiments) or a sweep
folder (it has sweep.json; its runs are under trials/). Runs are grouped into the tables they belong to:
an experiment folder's ``<experiment>_runs.json`` (written by `mvmammo experiment`) names the runs of each
table; runs no such file names form one more group.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mvmammo.errors import MvError

SWEEP_SPEC = "sweep.json"  # mvmammo.sweep.study.SPEC_NAME (not imported: that module pulls in optuna)


class ReportInputError(MvError):
    """A path given to `mvmammo report` is not a run, experiment or sweep folder."""


@dataclass
class Inputs:
    runs: list[Path]  # every run folder, in the order given (first seen wins)
    groups: dict[str, list[Path]]  # {table/group name: its runs}; a run may be in several tables
    sweeps: list[Path] = field(default_factory=list)  # sweep folders the runs come from
    folders: list[Path] = field(default_factory=list)  # experiment/sweep folders given (estimates live there)


def is_run(path: Path) -> bool:
    return (path / "config.json").is_file()


def _child_runs(folder: Path) -> list[Path]:
    # Folders starting with "_" hold caches and cohorts (runs/x/_cache), never runs.
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("_") and is_run(p))


def _listed_groups(folder: Path, runs: list[Path]) -> dict[str, list[Path]]:
    """{experiment: runs} from the folder's <experiment>_runs.json files, restricted to runs that exist."""
    present = {p.resolve(): p for p in runs}
    groups = {}
    for f in sorted(folder.glob("*_runs.json")):
        try:
            listed = json.loads(f.read_text())
        except ValueError:
            continue  # a torn file from an interrupted experiment: its runs fall into the "other" group
        members = []
        for r in (x for x in listed if isinstance(x, str)):
            # Paths are as the experiment was started (often relative to another working directory): the
            # folder name inside this experiment folder is the fallback.
            hit = present.get(Path(r).resolve()) or present.get((folder / Path(r).name).resolve())
            if hit is not None:
                members.append(hit)
        if members:
            groups[f.name[: -len("_runs.json")]] = members
    return groups


def sweep_of(run: Path) -> Path | None:
    """The sweep folder a run belongs to (SWEEP/trials/<trial>), or None."""
    for parent in (run.parent, run.parent.parent):
        if (parent / SWEEP_SPEC).is_file():
            return parent
    return None


def expand(paths: list[str | Path]) -> Inputs:
    """Run folders and their groups from the given paths; one-line error for a path that holds no runs."""
    runs: dict[Path, Path] = {}
    groups: dict[str, list[Path]] = {}
    sweeps: list[Path] = []
    folders: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ReportInputError(f"{path}: no such folder; give run folders, experiment folders (e.g. runs/table1) "
                                   "or sweep folders")
        if is_run(path):
            found, listed = [path], {}
        elif path.is_dir():
            found = _child_runs(path)
            if (path / SWEEP_SPEC).is_file() and (path / "trials").is_dir():
                found += _child_runs(path / "trials")
            listed = _listed_groups(path, found)
            folders.append(path)
        else:
            found, listed = [], {}
        if not found:
            raise ReportInputError(f"{path}: not a run folder (no config.json) and no run folders inside; give "
                                   "folders written by `mvmammo train`, `mvmammo experiment` or `mvmammo sweep`")
        for name, members in listed.items():  # tables may share runs (table2's Joint row is table1's)
            have = {m.resolve() for m in groups.get(name, [])}
            groups.setdefault(name, []).extend(m for m in members if m.resolve() not in have)
            runs.update({m.resolve(): runs.get(m.resolve(), m) for m in members})
        rest = [r for r in found if r.resolve() not in runs]
        if rest:
            # Runs given one by one form one group (their rows make one table), as `mvmammo table` does.
            other = "runs" if is_run(path) else f"other runs in {path.name}" if listed else path.name
            groups.setdefault(other, []).extend(rest)
            runs.update({r.resolve(): r for r in rest})
        for r in found:
            s = sweep_of(r)
            if s is not None and s.resolve() not in {x.resolve() for x in sweeps}:
                sweeps.append(s)
    return Inputs(list(runs.values()), {k: v for k, v in groups.items() if v}, sweeps, folders)
