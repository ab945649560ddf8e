"""The cache's files on disk: written with plain writes, read only after their sizes are checked.

Writing never goes through a memory map: a full disk under a mapped write is a SIGBUS ("Bus error", no
message, no cleanup). The arrays are created with their .npy header and the data region reserved at once
(``os.posix_fallocate``: a full disk shows as ENOSPC before any row is decoded), then rows go in with
``os.pwrite`` at their offsets. Small files (meta.json, index.csv, done.npy, checksums.npy) are written to a
temporary file in the same folder and moved over the old one (``os.replace``): a reader sees the old or the
new file, never half of one, and a failed write leaves no temporary file behind.

Reading checks every file before anything is mapped: a truncated or corrupt file is one :class:`CacheError`
naming it and saying how to rebuild.
"""
from __future__ import annotations

import errno
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from mvmammo.atomic import replace_atomic  # noqa: F401 (cache writers call it from here)
from mvmammo.errors import MvError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class CacheError(MvError, RuntimeError):
    """The cache cannot be built or read; the message names the row/file and what to do."""


def human(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(nbytes) < 1024 or unit == "TB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TB"


def rebuild_hint(root: Path) -> str:
    return f"rebuild it: `mvmammo cache TABLE --out {root}` (or delete the folder {root} and rerun)"


def free_bytes(path: Path) -> int:
    """Free bytes on the file system holding path (or its nearest existing parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return 0


def disk_full(path: Path, need: int, where: str, extra: str = "", option: str = "data.cache_dir") -> CacheError:
    """One line: which file, how much the cache needs, how much is free, how much to free."""
    free = free_bytes(path)
    short = max(need - free, 0) + (64 << 10)  # + file-system overhead
    return CacheError(f"{path}: no space left on the device: the cache needs {human(need)} in {where}, "
                      f"{human(free)} are free; free at least {human(short)}{extra} or choose another cache "
                      f"folder ({option}), then rerun")


def cannot_write(path: Path, exc: OSError, option: str = "data.cache_dir") -> CacheError:
    return CacheError(f"{path}: cannot write the cache ({exc.strerror or exc}); choose a cache folder you can "
                      f"write to ({option}) or fix its permissions")


# --- writing ---

def create_npy(path: Path, shape: tuple[int, ...], dtype=np.uint16) -> int:
    """Create path as a .npy file of ``shape`` with its data region reserved; returns the data offset.

    Raises OSError (ENOSPC when the space is not there; the partial file is removed)."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": tuple(int(s) for s in shape)}
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(os.dup(fd), "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            offset = f.tell()
        if nbytes:
            try:
                os.posix_fallocate(fd, offset, nbytes)
            except (AttributeError, OSError) as exc:
                if isinstance(exc, OSError) and exc.errno in DISK_FULL:
                    raise
                # No fallocate here (e.g. some network file systems): a sparse file; a full disk then
                # shows as ENOSPC at the row's pwrite, still a plain error.
                os.ftruncate(fd, offset + nbytes)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return offset


def npy_offset(path: Path) -> tuple[int, tuple[int, ...]]:
    """(data offset, shape) of a .npy file, from its header."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f".npy format version {version} not written by mvmammo")
        if fortran or dtype != np.dtype(np.uint16):
            raise ValueError(f"array of {dtype}{' (Fortran order)' if fortran else ''}, expected uint16")
        return f.tell(), shape


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of data at offset (os.pwrite may write less than asked)."""
    view = memoryview(data).cast("B")
    while len(view):
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        view, offset = view[n:], offset + n


def save_npy(path: Path, arr: np.ndarray) -> None:
    replace_atomic(path, lambda f: np.save(f, arr, allow_pickle=False))


def save_json(path: Path, obj: dict) -> None:
    replace_atomic(path, lambda f: f.write(json.dumps(obj, indent=2).encode()))


def save_csv(path: Path, df: pd.DataFrame) -> None:
    replace_atomic(path, lambda f: f.write(df.to_csv(index=False).encode()))


# --- reading (every failure one line naming the file) ---

def corrupt(path: Path, root: Path, detail: str) -> CacheError:
    return CacheError(f"{path}: truncated or corrupt cache file ({detail}); {rebuild_hint(root)}")


def read_meta(root: Path) -> dict:
    path = root / "meta.json"
    if not path.is_file():
        raise CacheError(f"{root}: not a window cache (no meta.json); build one with "
                         f"`mvmammo cache TABLE --out {root}`")
    try:
        meta = json.loads(path.read_text())
        if not isinstance(meta, dict) or not isinstance(meta.get("spec"), dict):
            raise ValueError("no 'spec' object")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise corrupt(path, root, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    return meta


def read_index(root: Path, need: tuple[str, ...] = ("breast_id", "split", "benign", "malignant")) -> pd.DataFrame:
    path = root / "index.csv"
    try:
        text = path.read_bytes().decode()
        index = pd.read_csv(io.StringIO(text), dtype={"breast_id": str, "patient_id": str, "exam_id": str,
                                                      "split": str, "key": str, "content": str},
                            keep_default_na=False, na_values=[])
        missing = [c for c in need if c not in index.columns]
        if missing:
            raise ValueError(f"no column {', '.join(missing)}")
        for c in ("benign", "malignant"):
            index[c] = pd.to_numeric(index[c], errors="raise").astype(np.int64)
        for c in ("has_cc", "has_mlo"):
            if c in index.columns:
                index[c] = index[c].astype(str).str.strip().str.lower().map({"true": True, "false": False, "1": True, "0": False})
                if index[c].isna().any():
                    raise ValueError(f"column {c} is not true/false")
    except FileNotFoundError:
        raise corrupt(path, root, "missing") from None
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise corrupt(path, root, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    return index


def read_small_npy(path: Path, root: Path, shape: tuple[int, ...], dtype) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise corrupt(path, root, "missing") from None
    except (OSError, ValueError, EOFError) as exc:
        raise corrupt(path, root, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    if arr.shape != shape or arr.dtype != np.dtype(dtype):
        raise corrupt(path, root, f"holds {arr.dtype}{list(arr.shape)}, expected {np.dtype(dtype)}{list(shape)}")
    return arr


def open_array(path: Path, root: Path, shape: tuple[int, ...]) -> np.ndarray:
    """Read-only memory map of a uint16 .npy array after checking its header and its length on disk."""
    try:
        offset, found = npy_offset(path)
        size = path.stat().st_size
    except FileNotFoundError:
        raise corrupt(path, root, "missing") from None
    except (OSError, ValueError, EOFError) as exc:
        raise corrupt(path, root, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    if tuple(found) != tuple(shape):
        raise corrupt(path, root, f"shape {list(found)}, expected {list(shape)}")
    need = offset + int(np.prod(shape)) * 2
    if size < need:
        raise corrupt(path, root, f"{size} bytes, expected {need}")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise corrupt(path, root, str(exc).splitlines()[0]) from None
