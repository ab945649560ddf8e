"""Help that teaches: `mvmammo --help` walks the workflow in order, and every argument of every command says
what it is."""
from __future__ import annotations

import argparse

from mvmammo.cli import build_parser


def _arguments(parser: argparse.ArgumentParser, path: list[str]):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _arguments(sub, path + [name])
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield " ".join(path + [action.option_strings[0] if action.option_strings else action.dest]), action


def test_every_argument_has_help():
    missing = [name for name, action in _arguments(build_parser(), ["mvmammo"]) if not (action.help or "").strip()]
    assert not missing, f"arguments without a help string: {missing}"


def test_top_level_help_describes_the_workflow_in_order():
    text = build_parser().format_help()
    assert "subcommands only" not in text
    workflow = text[text.index("the workflow, in order"):]
    steps = [f"mvmammo {s}" for s in ("synth", "validate", "preprocess", "cache", "train", "evaluate", "predict",
                                       "table")] + ["| report"]
    positions = [workflow.index(s) for s in steps]
    assert positions == sorted(positions), dict(zip(steps, positions))
