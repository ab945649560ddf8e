"""What a cached row was made from, so that a changed input is noticed: per-row fingerprints.

A row's windows depend on its image files (and heatmap files when the cache has 3 channels), on which views
are present, on the table's ``*_window_margin`` cells, and on the cache's geometry (sizes, margins, channels,
keep_aspect, resize rule: :class:`~mvmammo.data.cache.CacheSpec`, compared as a whole). Labels, splits and
ids do not change a window; they live in index.csv and are compared as the table checksum.

Identity of a file: (absolute path, size, mtime_ns) from one ``stat`` -- not a content hash, because
hashing would read every image on every run (a full-resolution cohort is terabytes) while a stat costs
microseconds, and any edit, copy or re-export of an image updates its mtime. The one hole in stat identity is
the file system's clock granularity: two writes within one timestamp tick (a few ms on Linux, 2 s on some
network or FAT file systems) can leave size and mtime unchanged. As git does ("racy clean" entries), a file
whose mtime lies within :data:`RACY_NS` of the moment the fingerprint is taken is also hashed by content,
and that content hash is checked again later for as long as the stat matches; such rows are re-recorded
without it once they are old enough. So: stat only for settled files, stat + content for fresh ones.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mvmammo import VIEWS
from mvmammo.data import exams

RACY_NS = 2_000_000_000  # files modified less than 2 s before a fingerprint is taken are also content-hashed


class MissingFile(Exception):
    """A row names a file that cannot be stat'ed: (row index, column, path, reason)."""

    def __init__(self, row: int, column: str, path: Path, reason: str):
        self.row, self.column, self.path, self.reason = row, column, path, reason
        super().__init__(f"{path}: {reason}")


def view_presence(df: pd.DataFrame) -> np.ndarray:
    """(N, 2) bool [cc, mlo]: the row has a path for that view (an empty cell = the view is absent)."""
    if hasattr(exams, "view_present"):
        return np.asarray(exams.view_present(df), dtype=bool)
    cols = []
    for v in VIEWS:
        col = df[f"{v}_path"] if f"{v}_path" in df.columns else pd.Series("", index=df.index)
        cols.append(~(col.isna() | (col.astype(str).str.strip() == "")).to_numpy())
    return np.stack(cols, axis=1).reshape(len(df), 2)


def _columns(channels: int) -> dict[str, tuple[str, ...]]:
    """The path columns a view's windows are made from."""
    return {v: (f"{v}_path",) + ((f"{v}_heatmap_benign", f"{v}_heatmap_malignant") if channels == 3 else ())
            for v in VIEWS}


@dataclass
class RowFiles:
    """Per row: the stat key (hex) and the files with their mtimes (for the racy-content check)."""
    keys: list[str]
    files: list[list[tuple[Path, int]]]


def stat_rows(df: pd.DataFrame, channels: int, present: np.ndarray) -> RowFiles:
    """One stat per file; raises :class:`MissingFile` for the first file that cannot be stat'ed."""
    cols = _columns(channels)
    keys, files = [], []
    for i, row in enumerate(df.to_dict("records")):
        parts, row_files = [], []
        for j, v in enumerate(VIEWS):
            if not present[i, j]:
                parts.append(f"{v}:absent")
                continue
            margin = row.get(f"{v}_window_margin", 0)
            parts.append(f"{v}:margin={0 if pd.isna(margin) else int(margin)}")
            for col in cols[v]:
                path = exams.resolve_path(df, row[col]).absolute()
                try:
                    st = os.stat(path)
                except OSError as exc:
                    raise MissingFile(i, col, path, exc.strerror or type(exc).__name__) from None
                parts.append(f"{col}={path}|{st.st_size}|{st.st_mtime_ns}")
                row_files.append((path, st.st_mtime_ns))
        keys.append(hashlib.blake2b("\n".join(parts).encode(), digest_size=12).hexdigest())
        files.append(row_files)
    return RowFiles(keys, files)


def content_keys(files: list[list[tuple[Path, int]]], taken_ns: int) -> list[str]:
    """Per row: a hash of the contents of its files modified within RACY_NS of ``taken_ns``; "" if none."""
    out = []
    for row_files in files:
        h, racy = hashlib.blake2b(digest_size=12), False
        for path, mtime in row_files:
            if mtime >= taken_ns - RACY_NS:
                racy = True
                h.update(str(path).encode())
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
        out.append(h.hexdigest() if racy else "")
    return out


def now_ns() -> int:
    return time.time_ns()


def changed_rows(cur: RowFiles, old_keys: np.ndarray, old_content: np.ndarray, old_taken_ns: int) -> np.ndarray:
    """bool (N,): rows whose inputs differ from what was recorded (same row count assumed).

    A row whose stat key matches but which was racy when recorded has its content hashed again now."""
    changed = np.asarray(cur.keys, dtype=object) != np.asarray(old_keys, dtype=object)
    recheck = np.flatnonzero(~changed & (np.asarray(old_content, dtype=object) != ""))
    if len(recheck):
        again = content_keys([cur.files[i] for i in recheck], old_taken_ns)
        for i, c in zip(recheck, again):
            changed[i] = c != old_content[i]
    return changed


def table_checksum(index: pd.DataFrame) -> str:
    """Checksum of index.csv's content (ids, side, split, labels, presence; not the file keys)."""
    cols = [c for c in index.columns if c not in ("key", "content")]
    return hashlib.sha1(index[cols].astype(str).to_csv(index=False).encode()).hexdigest()[:16]
