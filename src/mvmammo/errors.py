"""The one exception family the command line turns into a single ``error: ...`` line.

Code anywhere below the CLI raises :class:`MvError` (or a subclass, or one of the existing domain errors that
derive from it) with a message that names the file, row, key or run and says what to do. ``mvmammo`` prints
``error: <message>`` and exits 1 (:class:`UsageError`: 2); the traceback only with ``--debug`` or
``MVMAMMO_DEBUG=1``. Exceptions that are not ours (a bug, or a library error we did not anticipate) still end
in one line, which says so and how to get the traceback.
"""
from __future__ import annotations


class MvError(Exception):
    """A failure the user can act on; the message is the whole story (one line)."""

    exit_code = 1


class UsageError(MvError):
    """A bad command line or configuration value (exit 2)."""

    exit_code = 2


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (multi-line messages keep their first lines joined by '; ')."""
    text = str(exc).strip() or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) > 6:
        lines = lines[:5] + [f"... and {len(lines) - 5} more"]
    return "; ".join(lines)
