"""One process per run folder: an OS-level lock on ``RUN/.lock``.

``fcntl.flock`` is released by the kernel when its process dies (kill -9 included), so a lock left by a killed
run never blocks the next one; the file itself stays and only records the last holder (pid, host, command) for
the error message. A second ``train`` or ``evaluate`` on a folder in use refuses at once and names the holder.
On platforms without ``fcntl`` (Windows) the lock degrades to the holder file alone, checked but not enforced.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from mvmammo.errors import MvError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

LOCK_NAME = ".lock"


class RunLocked(MvError):
    """Another live process holds the run folder."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')} ({info.get('purpose', '?')} since " \
           f"{info.get('since', '?')})"


@contextmanager
def hold_run(run_dir: str | Path, purpose: str) -> Iterator[Path]:
    """Hold ``run_dir``'s lock for the block; raises :class:`RunLocked` at once when another process holds it.

    Re-entrant within one process (a nested hold of the same folder is a no-op), so a command may lock the
    folder and call library code that locks it again.
    """
    run_dir = Path(run_dir)
    key = str(run_dir.resolve())
    if key in _HELD:
        yield run_dir
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunLocked(f"{run_dir} is in use by {_holder(path)}; wait for it to finish, or use another "
                                "run folder") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose,
                "since": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        _HELD.add(key)
        try:
            yield run_dir
        finally:
            _HELD.discard(key)
    finally:
        os.close(fd)  # closing the descriptor releases the flock


_HELD: set[str] = set()
