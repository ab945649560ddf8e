"""Building a window cache: decide what to (re)build, say why in one line, write rows with plain writes.

Three ways, chosen by comparing the wanted geometry and row fingerprints with the folder (see cache.py):
- reuse: nothing changed (labels/splits changed: index.csv rewritten, windows kept);
- in place: same geometry and row count, some rows' inputs changed (or an interrupted build): those rows
  are marked not done, then decoded again into the existing, already allocated arrays;
- staged: anything else. A complete new set is written into ``root/.building/`` (arrays allocated up front,
  so a full disk shows at once), rows still valid in the old cache copied, others decoded; then the files
  replace the old ones. Until then the old cache stays as it was. A full disk removes ``.building/``.

Invariant that makes killing safe at any point: done[i] is true only if row i's bytes match index.csv's key
for row i; rows are marked not done before their key changes, and marked done after their bytes are written
(and synced, at each progress save).
"""
from __future__ import annotations

import errno
import os
import shutil
import sys
import zlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from mvmammo import VIEWS
from mvmammo.data import cache_spec as cache_mod
from mvmammo.data import cache_files as files
from mvmammo.data import cache_key, exams, images
from mvmammo.data.cache_files import CacheError
from mvmammo.data.cache_read import WindowCache
from mvmammo.data.cache_spec import FULL_HEIGHT_CC, CacheSpec, make_spec

INDEX_COLUMNS = ("breast_id", "patient_id", "exam_id", "side", "split", "benign", "malignant")
ARRAYS = tuple(f"{v}.npy" for v in VIEWS)
FILES = ARRAYS + ("done.npy", "checksums.npy", "index.csv")  # meta.json last: it makes the folder a cache


STAGING = ".building"
CHECKPOINT_ROWS = 256  # progress (done.npy, checksums) is saved every this many rows
DEFAULT_FLAGS = {"heatmaps": "data.heatmaps=false", "out": "data.cache_dir"}


@dataclass
class Found:
    """What a folder holds: a readable cache state (complete or not), or why not."""
    spec: CacheSpec | None = None
    index: pd.DataFrame | None = None
    done: np.ndarray | None = None
    taken_ns: int = 0
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.spec is not None


def inspect(root: Path) -> Found:
    if not (root / "meta.json").exists():
        return Found(problem="no cache yet")
    try:
        meta = files.read_meta(root)
        spec = CacheSpec.from_meta(meta["spec"])
        index = files.read_index(root)
        done = files.read_small_npy(root / "done.npy", root, (len(index),), bool)
        for v in VIEWS:
            files.open_array(root / f"{v}.npy", root, (len(index),) + spec.stored_shape(v))
        if "key" not in index.columns:
            return Found(problem=f"cache format changed (version {spec.version} -> {cache_mod.CACHE_VERSION})")
    except (CacheError, TypeError, KeyError) as exc:
        return Found(problem=f"the old cache is unreadable ({str(exc).split(';')[0]})")
    return Found(spec, index, done, int(meta.get("taken_ns", 0)))


def _index_frame(df: pd.DataFrame, present: np.ndarray, rf: cache_key.RowFiles, content: list[str]) -> pd.DataFrame:
    out = pd.DataFrame({c: df[c].to_numpy() for c in INDEX_COLUMNS if c in df.columns})
    for c in ("benign", "malignant"):
        out[c] = pd.to_numeric(out[c], errors="coerce").fillna(-1).astype(np.int64) if c in out.columns else -1
    if "split" not in out.columns:
        out["split"] = "all"
    out["has_cc"], out["has_mlo"] = present[:, 0], present[:, 1]
    out["key"], out["content"] = rf.keys, content
    return out


def _geometry_change(old: CacheSpec, new: CacheSpec) -> str:
    parts = []
    for name, label in (("size_cc", "CC window"), ("size_mlo", "MLO window"), ("margin_cc", "CC margin"),
                        ("margin_mlo", "MLO margin"), ("channels", "channels"), ("keep_aspect", "keep_aspect"),
                        ("resize", "resize rule"), ("version", "cache format version")):
        a, b = getattr(old, name), getattr(new, name)
        if a != b:
            fmt = (lambda s: "x".join(map(str, s))) if isinstance(a, tuple) else str
            parts.append(f"{label} {fmt(a)} -> {fmt(b)}")
    return ", ".join(parts)


def _meta(spec: CacheSpec, taken_ns: int) -> dict:
    return {"spec": asdict(spec), "taken_ns": taken_ns}


def build(df: pd.DataFrame, root: Path, spec: CacheSpec, progress: bool, flags: dict) -> WindowCache:
    present = cache_key.view_presence(df)
    _check_table(df, spec, present, flags)
    try:
        rf = cache_key.stat_rows(df, spec.channels, present)
    except cache_key.MissingFile as e:
        bid = exams.breast_ids(df).iloc[e.row]
        raise CacheError(f"exam table row {e.row + 2} (breast {bid}), column {e.column}: {e.path}: {e.reason}; "
                         "fix the path (mvmammo validate TABLE lists every problem)") from None
    taken = cache_key.now_ns()
    index = _index_frame(df, present, rf, cache_key.content_keys(rf.files, taken))
    spec = replace(spec, table_sha=cache_key.table_checksum(index))
    make_root(root, flags)
    with build_lock(root):
        found = inspect(root)
        same_geometry = found.ok and found.spec.geometry() == spec.geometry()
        try:
            if same_geometry and len(found.index) == len(index):
                changed = cache_key.changed_rows(rf, found.index["key"].to_numpy(), found.index["content"].to_numpy(),
                                                 found.taken_ns) | ~found.done
                if changed.any():
                    _in_place(df, root, spec, index, taken, found, changed, progress, flags)
                elif found.spec.table_sha != spec.table_sha:
                    note(f"cache {root}: labels, splits or ids changed: index.csv rewritten (windows reused)")
                    _write_index(root, spec, index, taken)
                elif (found.index["content"].to_numpy() != index["content"].to_numpy()).any():
                    _refresh(root, spec, index, taken)  # racy entries that have settled: stat alone from now on
            else:
                why = found.problem or (_geometry_change(found.spec, spec) if not same_geometry else
                                        f"rows {len(found.index)} -> {len(index)}")
                _staged(df, root, spec, index, taken, rf, found if same_geometry else None, why, progress, flags)
        except OSError as exc:
            if exc.errno in files.DISK_FULL:  # a small file (index, meta) of a cache that is otherwise kept
                raise files.disk_full(root, 16 << 20, str(root), option=flags["out"]) from None
            raise files.cannot_write(Path(exc.filename or root), exc, flags["out"]) from None
    return WindowCache(root)


def _check_table(df: pd.DataFrame, spec: CacheSpec, present: np.ndarray, flags: dict) -> None:
    if len(df) == 0:
        raise CacheError("the exam table has no rows to cache")
    none = np.flatnonzero(~present.any(axis=1))
    if len(none):
        raise CacheError(f"exam table row {none[0] + 2}: neither cc_path nor mlo_path is set; "
                         "remove the row or give at least one view")
    if spec.channels == 3:
        missing = [c for c in exams.HEATMAP_COLUMNS if c not in df.columns]
        if missing:
            raise CacheError(f"heatmap channels asked for but the exam table has no {', '.join(missing)} column(s); "
                             f"use {flags['heatmaps']} to cache the image channel only")
        for j, v in enumerate(VIEWS):
            for col in (f"{v}_heatmap_benign", f"{v}_heatmap_malignant"):
                cell = df[col]
                empty = np.flatnonzero(present[:, j] & (cell.isna() | (cell.astype(str).str.strip() == "")).to_numpy())
                if len(empty):
                    raise CacheError(f"exam table row {empty[0] + 2}, column {col}: empty heatmap path for a present "
                                     f"view; fill it or use {flags['heatmaps']}")


def _write_index(root: Path, spec: CacheSpec, index: pd.DataFrame, taken: int) -> None:
    files.save_csv(root / "index.csv", index)
    files.save_json(root / "meta.json", _meta(spec, taken))


def _refresh(root: Path, spec: CacheSpec, index: pd.DataFrame, taken: int) -> None:
    """Re-record settled fingerprints; optional (a read-only cache simply keeps re-checking content)."""
    try:
        _write_index(root, spec, index, taken)
    except OSError:
        pass


def _in_place(df, root: Path, spec: CacheSpec, index, taken, found: Found, changed: np.ndarray, progress,
              flags: dict) -> None:
    done = found.done.copy()
    keys_same = (found.index["key"].to_numpy() == index["key"].to_numpy())
    if keys_same.all() and (changed == ~found.done).all():
        note(f"cache {root}: resuming an interrupted build ({int(changed.sum())} of {len(index)} breasts left)")
    else:
        first = int(np.flatnonzero(changed)[0])
        note(f"cache {root}: {int(changed.sum())} of {len(index)} breasts have changed inputs (image or heatmap "
             f"files, window margins or views; first: table row {first + 2}, breast {index.breast_id[first]}): "
             "decoding them again")
    done[changed] = False
    try:
        files.save_npy(root / "done.npy", done)  # first: a row is never marked done under a new key
        _write_index(root, spec, index, taken)
        sums = files.read_small_npy(root / "checksums.npy", root, (len(index), 2), np.uint32).copy()
        _fill(df, root, spec, np.flatnonzero(changed), done, sums, progress)
    except OSError as exc:
        if exc.errno in files.DISK_FULL:
            # only small files grow in place
            raise files.disk_full(root, 16 << 20, str(root), option=flags["out"]) from None
        raise


def _staged(df, root: Path, spec: CacheSpec, index, taken, rf, old: Found | None, why: str, progress, flags) -> None:
    stage = root / STAGING
    n = len(index)
    st = inspect(stage)
    if (st.ok and st.spec.geometry() == spec.geometry() and len(st.index) == n
            and not cache_key.changed_rows(rf, st.index["key"].to_numpy(), st.index["content"].to_numpy(),
                                           st.taken_ns).any()):
        note(f"cache {root}: resuming the build in {stage} ({int((~st.done).sum())} of {n} breasts left; {why})")
        done = st.done.copy()
        sums = files.read_small_npy(stage / "checksums.npy", stage, (n, 2), np.uint32).copy()
        try:
            _write_index(stage, spec, index, taken)
            _fill(df, stage, spec, np.flatnonzero(~done), done, sums, progress)
        except OSError as exc:
            _full_disk_cleanup(exc, stage, root, spec, n, flags)
            raise
        _promote(stage, root)
        return
    remove_tree(stage)
    note(f"cache {root}: building {n} breasts ({why})")
    try:
        stage.mkdir()
        for v in VIEWS:
            files.create_npy(stage / f"{v}.npy", (n,) + spec.stored_shape(v))
        done = np.zeros(n, dtype=bool)
        sums = np.zeros((n, 2), dtype=np.uint32)
        if old is not None:
            _copy_valid_rows(root, stage, spec, old, rf, index, done, sums)
        files.save_npy(stage / "done.npy", done)
        files.save_npy(stage / "checksums.npy", sums)
        _write_index(stage, spec, index, taken)
        _fill(df, stage, spec, np.flatnonzero(~done), done, sums, progress)
    except BaseException as exc:
        if isinstance(exc, OSError):
            _full_disk_cleanup(exc, stage, root, spec, n, flags)  # raises the disk-full line
        if not (stage / "meta.json").exists():
            remove_tree(stage)  # failed before anything worth resuming was written
        raise
    _promote(stage, root)


def _full_disk_cleanup(exc: OSError, stage: Path, root: Path, spec: CacheSpec, n: int, flags: dict) -> None:
    """On a full disk: remove the partial set and raise the one-line error (old files untouched)."""
    if exc.errno not in files.DISK_FULL:
        return
    remove_tree(stage)
    need = n * sum(spec.row_bytes(v) for v in VIEWS) + n * 64 + (1 << 16)
    old = sum((root / name).stat().st_size for name in ARRAYS if (root / name).exists())
    extra = f" (deleting the outdated cache in {root} frees {files.human(old)})" if old else ""
    raise files.disk_full(root, need, str(root), extra, flags["out"]) from None


def _copy_valid_rows(root, stage, spec, old: Found, rf, index, done, sums) -> None:
    """Rows whose inputs match a complete row of the old cache (same geometry): copy its bytes, not decode."""
    try:
        old_sums = files.read_small_npy(root / "checksums.npy", root, (len(old.index), 2), np.uint32)
    except CacheError:
        return
    where = {k: j for j, k in enumerate(old.index["key"]) if old.done[j]}
    pairs = [(i, where[k]) for i, k in enumerate(index["key"]) if k in where]
    recheck = [(i, j) for i, j in pairs if old.index["content"].iloc[j]]
    if recheck:  # racy when recorded: compare contents again
        again = cache_key.content_keys([rf.files[i] for i, _ in recheck], old.taken_ns)
        bad = {i for (i, j), c in zip(recheck, again) if c != old.index["content"].iloc[j]}
        pairs = [(i, j) for i, j in pairs if i not in bad]
    if not pairs:
        return
    for v in VIEWS:
        nbytes = spec.row_bytes(v)
        src_off, _ = files.npy_offset(root / f"{v}.npy")
        dst_off, _ = files.npy_offset(stage / f"{v}.npy")
        src = os.open(root / f"{v}.npy", os.O_RDONLY)
        dst = os.open(stage / f"{v}.npy", os.O_RDWR)
        try:
            for i, j in pairs:
                files.pwrite_all(dst, os.pread(src, nbytes, src_off + j * nbytes), dst_off + i * nbytes)
            os.fsync(dst)
        finally:
            os.close(src)
            os.close(dst)
    for i, j in pairs:
        done[i], sums[i] = True, old_sums[j]


def _fill(df, target: Path, spec: CacheSpec, todo: np.ndarray, done: np.ndarray, sums: np.ndarray,
          progress: bool) -> None:
    """Decode rows ``todo`` into target's arrays with os.pwrite; saves progress every CHECKPOINT_ROWS rows and
    on the way out of an interruption."""
    if not len(todo):
        files.save_npy(target / "done.npy", done)
        return
    fds, offsets = {}, {}
    zeros = {v: np.zeros(spec.stored_shape(v), dtype=np.uint16) for v in VIEWS}
    zero_sum = {v: zlib.crc32(zeros[v].tobytes()) for v in VIEWS}
    present = cache_key.view_presence(df)

    def save() -> None:
        for fd in fds.values():
            os.fsync(fd)  # rows on disk before they are marked done
        files.save_npy(target / "checksums.npy", sums)
        files.save_npy(target / "done.npy", done)

    try:
        for v in VIEWS:
            offsets[v], _ = files.npy_offset(target / f"{v}.npy")
            fds[v] = os.open(target / f"{v}.npy", os.O_RDWR)
        bar = _progress(todo, progress, f"caching {len(todo)} breasts -> {target}")
        for k, i in enumerate(bar):
            row = df.iloc[i]
            for j, v in enumerate(VIEWS):
                if present[i, j]:
                    try:
                        win = cache_mod.read_view(df, row, v, spec)
                    except (images.ImageReadError, ValueError) as exc:
                        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                        raise CacheError(f"exam table row {i + 2} (breast {row['breast_id']}), {v}: {msg}") from None
                    sums[i, j] = zlib.crc32(win.tobytes())
                else:
                    win, sums[i, j] = zeros[v], zero_sum[v]
                files.pwrite_all(fds[v], win.data, offsets[v] + int(i) * spec.row_bytes(v))
            done[i] = True
            if k % CHECKPOINT_ROWS == CHECKPOINT_ROWS - 1 or k == len(todo) - 1:
                save()
    except (KeyboardInterrupt, CacheError):
        try:
            save()  # keep what was written: the next run resumes after it
        except OSError:
            pass
        raise
    finally:
        for fd in fds.values():
            os.close(fd)


def _promote(stage: Path, root: Path) -> None:
    """Move a complete set from .building/ over the old files; meta.json (which makes it a cache) last."""
    (root / "meta.json").unlink(missing_ok=True)
    for name in FILES:
        os.replace(stage / name, root / name)
    os.replace(stage / "meta.json", root / "meta.json")
    remove_tree(stage)


def _progress(items, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="breast", leave=False, disable=None)


# --- the entry point and its helpers ---

def build_cache(df: pd.DataFrame, root: str | Path, size_cc: tuple[int, int], size_mlo: tuple[int, int],
                heatmaps: bool, noise_px: float = 100.0, full_height: int = FULL_HEIGHT_CC,
                progress: bool = True, *, keep_aspect: bool = True, flags: dict | None = None) -> WindowCache:
    """Decode every row's windows into ``root``; resumes an interrupted build; reuses what is still valid.

    df: a validated exam table (:func:`mvmammo.data.exams.load_valid`); rows with an empty cc_path or
    mlo_path are one-view breasts (their absent view is stored as zeros). flags: how the caller's user
    names the options in messages ({"heatmaps": "--no-heatmaps", "out": "--out"} for `mvmammo cache`).
    """
    flags = {**DEFAULT_FLAGS, **(flags or {})}
    spec = make_spec(size_cc, size_mlo, heatmaps, noise_px, full_height, keep_aspect)
    return build(df, Path(root), spec, progress, flags)


@contextmanager
def build_lock(root: Path):
    """Hold ``root/.cache.lock`` (blocking) while building: two processes never write one cache at once.
    Where the lock cannot be created (a read-only folder) the build goes on without it."""
    try:
        import fcntl
        fd = os.open(root / ".cache.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except (ImportError, OSError):
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def make_root(root: Path, flags: dict) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CacheError(f"{root}: exists and is not a folder; choose another cache folder ({flags['out']})") \
            from None
    except OSError as exc:
        if exc.errno in files.DISK_FULL:
            raise files.disk_full(root, 1 << 20, str(root), option=flags["out"]) from None
        raise files.cannot_write(root, exc, flags["out"]) from None
    if not os.access(root, os.W_OK) and not (root / "meta.json").exists():
        raise files.cannot_write(root, OSError(errno.EACCES, "Permission denied"), flags["out"])


def note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
