"""Atomic file writes: a temp file in the target's folder, fsynced, then os.replace onto the target.

A reader sees the old file or the new one, never half of one; a failed write (a kill, a full disk) leaves the old
file and no temp behind. Every small metadata file the package writes goes through here.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, IO


def replace_atomic(path: str | Path, write: Callable[[IO[bytes]], object]) -> None:
    """write(binary file object) into a temp file beside ``path``, fsync, then os.replace onto ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # beside it: os.replace stays on one file system
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """``path.write_text(text)``, atomically."""
    replace_atomic(path, lambda f: f.write(text.encode()))
