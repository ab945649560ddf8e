"""Experiments are files: each names the paper table it reproduces, its rows (config overrides), the
command that runs it, and a quick mode for CPU smoke runs. See :mod:`mvmammo.experiments.runner`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Row:
    name: str  # run folders are <name>-s<seed>
    overrides: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()  # rows whose runs must exist first (e.g. pretraining needs uni-view runs)


@dataclass(frozen=True)
class Experiment:
    name: str
    reproduces: str
    command: str
    preset: str
    overrides: tuple[str, ...]
    rows: tuple[Row, ...]
    quick_overrides: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0, 1, 2)
    quick_seeds: tuple[int, ...] = (0,)
    expected: str = ""
    notes: list[str] = field(default_factory=list)
    # Called as prepare(out, quick) before any row is built (e.g. the heatmap chain makes the rows' table).
    prepare: Callable[..., object] | None = None
    # Work outside the training runs, for `experiment --help`'s cost line (e.g. the heatmap chain's patch model).
    cost_note: str = ""


def get(name: str) -> Experiment:
    import importlib

    try:
        module = importlib.import_module(f"mvmammo.experiments.{name.replace('-', '_')}")
    except ModuleNotFoundError as exc:
        raise KeyError(f"unknown experiment {name!r}; see src/mvmammo/experiments/") from exc
    return module.EXPERIMENT
