"""Building a window store: decode, window and compress every breast in worker processes; append the records
to shard files with plain writes; commit the index chunk by chunk so that a killed build resumes.

Resume and change detection: a chunk is committed once its shard bytes are fsynced and its index part is
written (atomically). A rerun reads the committed parts, truncates each shard to its committed length (anything
after is a torn write), and encodes only the rows that are missing or whose inputs changed (file fingerprints,
data/cache_key.py). A new geometry, heatmap factor, codec or row set starts the store afresh, saying why.
"""
from __future__ import annotations

import errno
import os
import shutil
import sys
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from mvmammo import VIEWS
from mvmammo.data import cache_key
from mvmammo.data import cache_files as files
from mvmammo.data.cache_spec import HEATMAP_SCALE, CacheSpec, read_view
from mvmammo.data.cache_files import CacheError
from mvmammo.data.store import format as fmt
from mvmammo.data.store.reader import WindowStore

CHUNK_ROWS = 64  # rows per committed chunk (a kill loses at most this many encodings)
SHARD_BYTES = 2 << 30  # a shard file is closed once it holds this many bytes (2 GiB)
INDEX_COLUMNS = ("breast_id", "patient_id", "exam_id", "side", "split", "benign", "malignant")

_WORKER_DF: pd.DataFrame | None = None


def record_columns() -> list[str]:
    """The index columns that locate and check a row's records (beside ids, split, labels, presence)."""
    per_view = ("shard", "offset", "image_nbytes", "heat_nbytes", "crc")
    return ["key", "content", "taken_ns"] + [f"{v}_{k}" for v in VIEWS for k in per_view]


def _init_worker(df: pd.DataFrame) -> None:
    global _WORKER_DF
    _WORKER_DF = df


def encode_row(task: tuple[int, tuple[bool, bool], dict, int]) -> dict:
    """One breast -> {view: (image bytes, heat bytes)}; runs in a worker process."""
    i, present, spec_d, factor = task
    df = _WORKER_DF
    spec = CacheSpec(**spec_d)
    row = df.iloc[i]
    out: dict = {"i": i}
    for j, v in enumerate(VIEWS):
        if not present[j]:
            out[v] = (b"", b"")
            continue
        win = read_view(df, row, v, spec)  # uint16 (C, Hp, Wp), heatmaps scaled to 0..65535
        heat = b""
        if spec.channels == 3:
            heat = fmt.compress_heat(fmt.downsample_heat(win[1:].astype(np.float32) / HEATMAP_SCALE, factor))
        out[v] = (fmt.compress_image(win[0]), heat)
    return out


def _meta(spec: CacheSpec, factor: int, complete: bool, taken: int) -> dict:
    return {"format": fmt.FORMAT, "version": fmt.VERSION, "spec": asdict(spec), "heat_factor": factor,
            "codec": fmt.CODEC, "complete": complete, "taken_ns": taken}


def _same_setup(old: dict, new: dict) -> str:
    """'' when a store built with ``old`` meta can be continued for ``new``, else why not."""
    if old.get("format") != fmt.FORMAT or old.get("version") != fmt.VERSION:
        return "it was written by another format version"
    o, n = dict(old.get("spec", {})), dict(new["spec"])
    o.pop("table_sha", None), n.pop("table_sha", None)
    o = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in o.items()}
    n = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in n.items()}
    if o != n:
        diff = [k for k in n if o.get(k) != n[k]]
        return f"its window geometry differs ({', '.join(diff)})"
    if old.get("heat_factor") != new["heat_factor"] or old.get("codec") != new["codec"]:
        return "its heatmap factor or codec differs"
    return ""


def _committed(root: Path) -> pd.DataFrame:
    """All committed record rows (later parts override earlier ones for the same row), or an empty frame."""
    parts = sorted((root / "parts").glob("part-*.parquet"))
    frames = []
    for p in parts:
        try:
            frames.append(pd.read_parquet(p))
        except Exception as exc:  # a damaged part: its rows are simply encoded again
            print(f"{p}: unreadable index part ({type(exc).__name__}); its rows will be encoded again",
                  file=sys.stderr)
    if (root / "index.parquet").exists():
        try:
            frames.insert(0, pd.read_parquet(root / "index.parquet"))
        except Exception:
            pass
    if not frames:
        return pd.DataFrame()
    allp = pd.concat(frames, ignore_index=True)
    return allp.drop_duplicates("row", keep="last").set_index("row").sort_index()


class _ShardWriter:
    """Appends bytes to numbered shard files with os.pwrite; a full disk is one CacheError line."""

    def __init__(self, root: Path, first: int, remaining_estimate: int):
        self.dir = root / "shards"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.num, self.fd, self.pos = first - 1, -1, 0
        self.remaining = remaining_estimate
        self._open_next()

    def _open_next(self) -> None:
        if self.fd >= 0:
            os.fsync(self.fd)
            os.close(self.fd)
        self.num += 1
        self.path = self.dir / f"{self.num:05d}.bin"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.pos = 0

    def append(self, data: bytes) -> tuple[int, int]:
        if self.pos >= SHARD_BYTES:
            self._open_next()
        try:
            files.pwrite_all(self.fd, data, self.pos)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise files.disk_full(self.path, self.remaining, str(self.dir.parent)) from None
            raise files.cannot_write(self.path, exc) from None
        where = (self.num, self.pos)
        self.pos += len(data)
        self.remaining = max(0, self.remaining - len(data))
        return where

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1


def _truncate_torn(root: Path, committed: pd.DataFrame) -> int:
    """Cut every shard back to its committed length; returns the next free shard number."""
    ends: dict[int, int] = {}
    for v in VIEWS:
        if len(committed) and f"{v}_shard" in committed:
            c = committed[committed[f"{v}_image_nbytes"].fillna(0).astype(np.int64) > 0]
            for s, e in zip(c[f"{v}_shard"], c[f"{v}_offset"] + c[f"{v}_image_nbytes"] + c[f"{v}_heat_nbytes"]):
                ends[int(s)] = max(ends.get(int(s), 0), int(e))
    nums = []
    for p in sorted((root / "shards").glob("*.bin")):
        n = int(p.stem)
        nums.append(n)
        if p.stat().st_size != ends.get(n, 0):
            os.truncate(p, ends.get(n, 0))
    return max(nums, default=-1) + 1


def build_store(df: pd.DataFrame, root: str | Path, spec: CacheSpec, heat_factor: int | None = None,
                workers: int = 1, progress: bool = True) -> "WindowStore":
    """Encode every row of a validated exam table into the store at ``root``; resumes; rebuilds changed rows.

    spec: the window geometry (:func:`mvmammo.data.cache.make_spec`); heat_factor: None = :func:`heat_factor_for`.
    """
    root = Path(root)
    factor = heat_factor or fmt.heat_factor_for(spec.size_cc[0])
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise files.cannot_write(root, exc) from None
    present = cache_key.view_presence(df)
    try:
        rf = cache_key.stat_rows(df, spec.channels, present)
    except cache_key.MissingFile as exc:
        raise CacheError(f"exam table row {exc.row + 2}, {exc.column}: {exc.path}: {exc.reason}; fix the path "
                         "or the file, then rerun") from None
    taken = cache_key.now_ns()
    content = cache_key.content_keys(rf.files, taken)
    new_meta = _meta(spec, factor, False, taken)
    meta_path = root / "meta.json"
    committed = pd.DataFrame()
    if meta_path.exists():
        try:
            old = files.read_meta(root)
        except CacheError:
            old = {}
        why = _same_setup(old, new_meta) if old else "its meta.json is unreadable"
        if not why:
            committed = _committed(root)
            if len(committed) and (committed.index.max() >= len(df) or not np.array_equal(
                    committed["breast_id"].astype(str).to_numpy(),
                    df["breast_id"].astype(str).to_numpy()[committed.index.to_numpy()])):
                why, committed = "the exam table's rows changed", pd.DataFrame()
        if why:
            print(f"{root}: rebuilding the window store: {why}", file=sys.stderr)
            for sub in ("shards", "parts"):
                shutil.rmtree(root / sub, ignore_errors=True)
            (root / "index.parquet").unlink(missing_ok=True)
    keys = np.asarray(rf.keys, dtype=object)
    todo = np.ones(len(df), dtype=bool)
    if len(committed):
        idx = committed.index.to_numpy()
        same = committed["key"].to_numpy(dtype=object) == keys[idx]
        racy = committed["content"].to_numpy(dtype=object) != ""
        if racy.any():  # recorded while fresh: compare contents again (cache_key's racy rule)
            again = cache_key.content_keys([rf.files[i] for i in idx[racy]], int(committed["taken_ns"].max()))
            same[np.flatnonzero(racy)] &= np.asarray(again, dtype=object) == committed["content"].to_numpy()[racy]
        todo[idx[same]] = False
        changed = int((~same).sum())
        if changed:
            print(f"{root}: {changed} row(s) whose images changed are encoded again", file=sys.stderr)
    if not todo.any() and _complete_and_current(root, df, present):
        return WindowStore(root)  # nothing to do: no write at all (other ranks and readers may be using it)
    files.save_json(meta_path, new_meta)
    (root / "parts").mkdir(exist_ok=True)
    next_shard = _truncate_torn(root, committed)
    rows = np.flatnonzero(todo)
    if len(rows):
        per_row = sum(int(np.prod(spec.stored_shape(v)[1:])) * 2 for v in VIEWS) // 2  # ~2x compression
        _encode(df, root, spec, factor, rows, present, keys, content, taken, next_shard, per_row * len(rows),
                workers, progress)
    _finish(root, df, present, new_meta)
    return WindowStore(root)


def _encode(df, root, spec, factor, rows, present, keys, content, taken, next_shard, estimate, workers, progress):
    from tqdm.auto import tqdm

    spec_d = asdict(spec)
    tasks = [(int(i), (bool(present[i, 0]), bool(present[i, 1])), spec_d, factor) for i in rows]
    writer = _ShardWriter(root, next_shard, estimate)
    part_no = len(list((root / "parts").glob("part-*.parquet")))
    pending: list[dict] = []
    bar = tqdm(total=len(tasks), desc=f"store {root.name}", unit="breast", disable=not progress or None,
               file=sys.stderr, leave=False)

    def commit() -> None:
        nonlocal part_no
        writer.sync()
        frame = pd.DataFrame(pending)
        files.replace_atomic(root / "parts" / f"part-{part_no:06d}.parquet",
                             lambda f: frame.to_parquet(f, index=False))
        part_no += 1
        pending.clear()

    pool = None
    try:
        if workers > 1 and len(tasks) > 1:
            pool = get_context("fork").Pool(min(workers, len(tasks)), initializer=_init_worker, initargs=(df,))
            results = pool.imap(encode_row, tasks, chunksize=2)
        else:
            _init_worker(df)
            results = map(encode_row, tasks)
        for res in results:
            i = res["i"]
            rec = {"row": i, "breast_id": str(df["breast_id"].iloc[i]), "key": keys[i], "content": content[i],
                   "taken_ns": taken}
            for v in VIEWS:
                image, heat = res[v]
                shard, off = writer.append(image + heat) if image else (-1, 0)
                rec.update({f"{v}_shard": shard, f"{v}_offset": off, f"{v}_image_nbytes": len(image),
                            f"{v}_heat_nbytes": len(heat), f"{v}_crc": fmt.crc(image, heat)})
            pending.append(rec)
            bar.update(1)
            if len(pending) >= CHUNK_ROWS:
                commit()
        if pending:
            commit()
    except CacheError:
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise files.disk_full(root, estimate, str(root)) from None
        raise
    finally:
        bar.close()
        writer.close()
        if pool is not None:
            pool.terminate()


def _index_frame(df: pd.DataFrame, present: np.ndarray) -> pd.DataFrame:
    """The table's ids, split, labels (-1 unknown) and view presence, as the index stores them."""
    index = pd.DataFrame({c: df[c].to_numpy() for c in INDEX_COLUMNS if c in df.columns})
    for c in ("breast_id", "patient_id", "exam_id"):
        if c in index:
            index[c] = index[c].astype(str)
    for c in ("benign", "malignant"):
        if c in index:
            index[c] = pd.to_numeric(index[c], errors="coerce").fillna(-1).astype(np.int64)
    index["has_cc"], index["has_mlo"] = present[:, 0], present[:, 1]
    return index


def _complete_and_current(root: Path, df: pd.DataFrame, present: np.ndarray) -> bool:
    """The folder holds a complete store whose index already says what the table says (ids, splits, labels)."""
    try:
        meta = files.read_meta(root)
        if not meta.get("complete") or (root / "parts").exists():
            return False
        old = pd.read_parquet(root / "index.parquet")
    except Exception:
        return False
    new = _index_frame(df, present)
    if len(old) != len(new) or any(c not in old for c in new.columns):
        return False
    return all(np.array_equal(old[c].astype(str).to_numpy(), new[c].astype(str).to_numpy()) for c in new.columns)


def _finish(root: Path, df: pd.DataFrame, present: np.ndarray, meta: dict) -> None:
    """Merge the committed parts with the table's ids and labels into index.parquet; mark the store complete."""
    rec = _committed(root)
    if len(rec) != len(df):
        raise CacheError(f"{root}: {len(df) - len(rec)} row(s) missing after the build; rerun the same command")
    index = _index_frame(df, present)
    rec = rec[record_columns()].reset_index(drop=True)
    index = pd.concat([index.reset_index(drop=True), rec], axis=1)
    index.insert(0, "row", np.arange(len(index)))
    files.replace_atomic(root / "index.parquet", lambda f: index.to_parquet(f, index=False))
    shutil.rmtree(root / "parts", ignore_errors=True)
    files.save_json(root / "meta.json", {**meta, "complete": True})
