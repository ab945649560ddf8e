"""A small real file system that fills up: a tmpfs mounted for one test (root only; skipped elsewhere)."""
from __future__ import annotations

import contextlib
import os
import subprocess

import pytest


@contextlib.contextmanager
def small_tmpfs(path, size: str = "1m"):
    """Mount a tmpfs of ``size`` at ``path`` for the block; skips the test when mounting is not allowed."""
    os.makedirs(path, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the fault-injection test covers this case")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
