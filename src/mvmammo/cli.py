"""The `mvmammo` command: subcommands only, no logic.

Each module in :mod:`mvmammo.commands` defines ``register(subparsers)``, adding its subcommand(s) with a
``func(args) -> int`` default. New commands are new files there; this file does not change.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from mvmammo import __version__, commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mvmammo", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mvmammo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; runs resume from their last checkpoint (run the same command again)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
