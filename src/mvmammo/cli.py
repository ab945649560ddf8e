"""The `mvmammo` command line: it parses and dispatches; the work happens in the library.

Each module in :mod:`mvmammo.commands` defines ``register(subparsers)``, adding its subcommand(s) with a
``func(args) -> int`` default. New commands are new files there; this file does not change.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import sys

from mvmammo import __version__, commands


DESCRIPTION = ("Train, diagnose and improve two-view (CC + MLO) deep networks for breast cancer screening "
               "(Wu et al., MIDL 2020), on your mammograms or on the embedded synthetic cohort.")
WORKFLOW = """the workflow, in order (each command has --help):
  mvmammo demo                                   everything below on the synthetic cohort, one command
  mvmammo synth ... | mvmammo import FORMAT ...  an exam table: synthetic, or from a dataset / a clinic's export
  mvmammo validate TABLE                         check it (one line per problem, naming row and column)
  mvmammo preprocess TABLE --out DIR             crop, flip, window every breast (film and digital)
  mvmammo heatmaps TABLE --patch-model RUN ...   optional: the benign/malignant heatmap channels
  mvmammo cache TABLE --out DIR                  decode once into a compressed window store
  mvmammo train [--preset P] key=value ...       one run (resumes after a kill; torchrun for several GPUs)
  mvmammo sweep EXPERIMENT ...                   the paper's hyperparameter search
  mvmammo evaluate RUN | mvmammo predict RUN ... test AUC with CIs | predictions on new exams
  mvmammo table RUN... | compare | analyze | plot | report   tables, tests, view use, figures, one HTML page
errors are one line; add --debug (or MVMAMMO_DEBUG=1) for the traceback."""


class _Parser(argparse.ArgumentParser):
    """argparse with our failure format: one `error:` line naming the command, exit 2."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(2, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mvmammo", description=DESCRIPTION, epilog=WORKFLOW,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mvmammo {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback on errors (also MVMAMMO_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def _debug(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("MVMAMMO_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug(argv)
    # --debug is accepted anywhere on the line (before or after the subcommand).
    argv = [a for a in argv if a != "--debug"]
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
    except Exception as exc:  # every failure ends in one line; the traceback only when asked for
        if debug:
            raise
        print(f"error: {_message(exc)}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)


_OS_HINTS = {
    errno.EACCES: "choose a location you can write to, or fix its permissions",
    errno.EPERM: "choose a location you can write to, or fix its permissions",
    errno.EROFS: "the file system is read-only: choose another location",
    errno.ENOSPC: "the disk is full: free space there and rerun (runs and caches resume)",
    errno.ENOTDIR: "a file stands where a folder is needed: choose another path",
    errno.EEXIST: "something is already there: choose another path",
    errno.EISDIR: "a folder stands where a file is needed: give a file path",
    errno.ENOENT: "check the path",
}


def _message(exc: BaseException) -> str:
    from mvmammo.errors import MvError, one_line

    if isinstance(exc, OSError) and not isinstance(exc, MvError) and exc.filename is not None:
        hint = _OS_HINTS.get(exc.errno, "check the path")
        return f"{exc.filename}: {exc.strerror or one_line(exc)}; {hint}"
    if isinstance(exc, (MvError, OSError, ValueError, LookupError)) or type(exc).__module__.startswith("mvmammo"):
        return one_line(exc)
    # Not an error we raise on purpose: say so, so that it gets reported rather than worked around.
    return (f"unexpected {type(exc).__name__}: {one_line(exc)} (rerun with --debug for the traceback and "
            "report it)")


if __name__ == "__main__":
    raise SystemExit(main())
