"""From a config to batches: resolve the exam table (the synthetic cohort by default), build or reuse the
window cache, and turn cache rows into model-ready batches on the target device.

The data path, fast or plain, is: uint16 windows (B, C, H + 2m, W + 2m) from the memory-mapped cache ->
int16 bytes in (pinned) host memory -> device (non-blocking) -> values 0..65535 as float32 on the device ->
random window (one affine_grid + grid_sample) -> standardise -> model dtype and memory format. The
prefetching variant (run.prefetch > 0) moves the first three arrows to a background thread; random boxes are
always drawn here, in the consumer, so both variants give identical batches.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from mvmammo import VIEWS
from mvmammo.config import Config
from mvmammo.data import augment, exams
from mvmammo.data.cache import HEATMAP_SCALE, WindowCache, build_cache, make_spec
from mvmammo.data.store import WindowStore, build_store, is_store
from mvmammo.errors import UsageError
from mvmammo.training.accel import compile_or_eager
from mvmammo.training.distributed import pick_device, shard_bounds  # noqa: F401 (pick_device: callers import it here)
from mvmammo.training.prefetch import Prefetcher, fill_host, host_layout


def cache_root(cfg: Config) -> Path:
    """Where cohorts and caches live: shared by all runs of one experiment folder."""
    if cfg.data.cache_dir:
        return Path(cfg.data.cache_dir)
    return Path(cfg.run.out).resolve().parent / "_cache"


def resolve_table(cfg: Config, progress: bool = True) -> Path:
    """The exam table path; generates the embedded synthetic cohort when data.table is empty."""
    if cfg.data.table:
        return Path(cfg.data.table)
    from mvmammo.data.synthetic import generate_cohort

    d = cfg.data
    name = f"synth-{d.synth_preset}-n{d.synth_breasts}-s{d.synth_seed}-{d.size_cc[0]}x{d.size_cc[1]}"
    out = cache_root(cfg) / name
    generate_cohort(out, preset=d.synth_preset, breasts=d.synth_breasts, size_cc=tuple(d.size_cc),
                    size_mlo=tuple(d.size_mlo), seed=d.synth_seed, heatmaps=d.heatmaps, progress=progress)
    return out / "exams.csv"


def prepare_cache(cfg: Config, progress: bool = True) -> WindowCache:
    """The window cache a config asks for: data.cache (prebuilt, read as is) or one built or reused under
    cache_root(cfg)/windows/ (rebuilt where its inputs or geometry changed; see mvmammo.data.cache).

    One-view breasts: data.missing_view=drop leaves them out (a one-line note says how many); mask keeps
    them, the absent view stored as zeros and flagged in batch["present"].
    """
    d = cfg.data
    if d.missing_view not in MISSING_VIEW:
        raise UsageError(f"data.missing_view={d.missing_view!r}: use one of {', '.join(MISSING_VIEW)}")
    if d.cache:
        return _prebuilt(cfg, progress)
    table_path = resolve_table(cfg, progress)
    df = exams.load_valid(table_path, allow_missing_view=True)
    one_view = ~exams.view_present(df).all(axis=1)
    if d.missing_view == "drop" and one_view.any():
        note(f"{table_path}: {int(one_view.sum())} breast(s) with one view left out (data.missing_view=drop; "
             "data.missing_view=mask keeps them)")
        df = df[~one_view].reset_index(drop=True)
    tag = _cache_tag(cfg, table_path)
    old = cache_root(cfg) / "windows" / tag
    if d.format == "memmap":
        return build_cache(df, old, d.size_cc, d.size_mlo, d.heatmaps, d.aug_noise_px, d.full_height, progress,
                           keep_aspect=d.keep_aspect)
    if (old / "meta.json").exists() and progress:
        note(f"{old}: a memory-mapped cache of this table is no longer used (data.format=store builds a compressed "
             "window store instead); delete that folder to free its space, or set data.format=memmap to keep using it")
    spec = make_spec(d.size_cc, d.size_mlo, d.heatmaps, d.aug_noise_px, d.full_height, d.keep_aspect)
    workers = min(8, os.cpu_count() or 1) if len(df) > 256 else 1  # forking costs more than small tables take
    root = cache_root(cfg) / "store" / (tag + (f"-h{d.heat_factor}" if d.heat_factor else ""))
    return build_store(df, root, spec, heat_factor=d.heat_factor or None, workers=workers, progress=progress)


MISSING_VIEW = ("drop", "mask")


def _cache_tag(cfg: Config, table_path: Path) -> str:
    """A folder name per (table, geometry, row selection): configs that differ never rebuild each other's cache."""
    d = cfg.data
    what = json.dumps([str(Path(table_path).resolve()), list(d.size_cc), list(d.size_mlo), d.heatmaps,
                       d.aug_noise_px, d.full_height, d.keep_aspect, d.missing_view])
    sha = hashlib.sha1(what.encode()).hexdigest()[:8]
    return f"{table_path.parent.name}-{d.size_cc[0]}x{d.size_cc[1]}-{d.size_mlo[0]}x{d.size_mlo[1]}" \
           f"-c{3 if d.heatmaps else 1}-{sha}"


def _prebuilt(cfg: Config, progress: bool) -> WindowCache:
    """data.cache=DIR: the cache as built (`mvmammo cache TABLE --out DIR`). Its own channels and window sizes
    win over data.heatmaps / data.size_* (a note says so when they differ); nothing is rebuilt."""
    d = cfg.data
    cache = WindowStore(d.cache) if is_store(d.cache) else WindowCache(d.cache)
    s = cache.spec
    differs = []
    if s.channels != (3 if d.heatmaps else 1):
        differs.append(f"{s.channels} channel(s) (data.heatmaps={str(d.heatmaps).lower()})")
    if tuple(s.size_cc) != tuple(d.size_cc) or tuple(s.size_mlo) != tuple(d.size_mlo):
        differs.append(f"windows CC {s.size_cc[0]}x{s.size_cc[1]}, MLO {s.size_mlo[0]}x{s.size_mlo[1]} "
                       f"(data.size_cc / data.size_mlo)")
    if differs and progress:
        note(f"data.cache={d.cache}: using the cache's own {' and '.join(differs)}")
    one_view = ~cache.present().all(axis=1)
    if d.missing_view == "drop" and one_view.any():
        cache.exclude(one_view)
        if progress:
            note(f"data.cache={d.cache}: {int(one_view.sum())} breast(s) with one view left out "
                 "(data.missing_view=drop; data.missing_view=mask keeps them)")
    return cache


def note(msg: str) -> None:
    print(f"note: {msg}", file=sys.stderr, flush=True)


def _uint16_view_ok(device: torch.device) -> bool:
    """Whether this torch can convert uint16 tensors on the device (newer versions); else int16 + fix-up."""
    key = device.type
    if key not in _U16_OK:
        try:
            probe = torch.tensor([-1], dtype=torch.int16, device=device).view(torch.uint16).float()
            _U16_OK[key] = float(probe[0].item()) == 65535.0
        except (RuntimeError, TypeError, AttributeError):
            _U16_OK[key] = False
    return _U16_OK[key]


_U16_OK: dict[str, bool] = {}


def raw_to_float(raw: torch.Tensor) -> torch.Tensor:
    """int16 tensor holding uint16 bits -> float32 values 0..65535 (on raw's device)."""
    if raw.dtype != torch.int16:
        return raw.float()
    if _uint16_view_ok(raw.device):
        return raw.view(torch.uint16).float()
    x = raw.float()
    return torch.where(x < 0, x + 65536.0, x)


def windows(raw: torch.Tensor, boxes: torch.Tensor | None, size: tuple[int, int], mode: str = augment.RESIZE_MODE,
            dtype: torch.dtype = torch.float32, channels_last: bool = False,
            heat: torch.Tensor | None = None) -> torch.Tensor:
    """Cached windows (B, C, Hp, Wp) int16/uint16 bits -> network input (B, C, H, W) in ``dtype``.

    boxes: (B, 4) (y0, y1, x0, x1) border offsets on raw's device (data/augment.py), or None for the centre
    window. heat: the window store's heatmap grid (B, 2, h, w) float16 in [0, 1], joined to the image channel
    (raw is then (B, 1, Hp, Wp)): a grid at full resolution is resampled with the image; a coarser one is read
    at the image's sample points (bilinear, never upsampled to full resolution: benchmarks/augment_speed.py).
    A pure function of its tensors, so torch.compile can fuse the conversion, resampling and standardisation.
    """
    x = raw_to_float(raw)
    coarse = heat is not None and tuple(heat.shape[-2:]) != tuple(x.shape[-2:])
    if heat is not None and not coarse:
        x = torch.cat([x, heat.float() * HEATMAP_SCALE], dim=1)
    out = augment.normalise(augment.crop_resize(x, size, boxes, mode))
    if coarse:
        out = torch.cat([out, augment.crop_resize_coarse(heat, x.shape[-2:], size, boxes).clamp(0.0, 1.0)], dim=1)
    x = out.to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def pinned_batch(cache: WindowCache, rows: np.ndarray, pin: bool) -> dict[str, torch.Tensor]:
    """{view: int16 (B, C, Hp, Wp), "labels": int64 (B, 2), "present": float32 (B, 2) [cc, mlo] 1 = view
    present} in host memory (pinned when pin)."""
    bufs = {key: torch.empty(shape, dtype=dtype, pin_memory=pin)
            for key, (shape, dtype) in host_layout(cache, len(rows)).items()}
    out = fill_host(cache, rows, bufs)
    out["labels"] = torch.from_numpy(cache.labels(rows))
    out["present"] = torch.from_numpy(cache.present(rows).astype(np.float32))
    if pin:
        out["labels"], out["present"] = out["labels"].pin_memory(), out["present"].pin_memory()
    return out


@dataclass
class BatchMaker:
    """Cache rows -> {"cc", "mlo": (B, C, H, W), "benign", "malignant": (B,), "present": (B, 2) float [cc, mlo]
    (1 = view present; an absent view's window is zeros), "rows": (B,)}.

    dtype: of the views (float32; bfloat16 under bf16 autocast, where the first convolution would round
    to it anyway). prefetch: batches loaded ahead by :meth:`batches` (0 = load on demand).
    compile: run :func:`windows` through torch.compile (falls back to eager with a warning).
    """

    cache: WindowCache
    device: torch.device
    channels_last: bool = False
    resize_mode: str = augment.RESIZE_MODE  # bicubic, as the reference code
    dtype: torch.dtype = torch.float32
    prefetch: int = 0
    compile: bool = False
    _windows: object = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        _uint16_view_ok(self.device)  # probe now (it syncs), not inside a compiled or timed step
        self._windows = compile_or_eager(windows, self.compile, "augmentation")

    # --- loading: cache rows -> int16 windows on the device ---
    def load(self, rows: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """({view: int16 (B, C, Hp, Wp), "present": float32 (B, 2)}, labels (B, 2)) on the device, without a
        host synchronisation."""
        cuda = self.device.type == "cuda"
        host = pinned_batch(self.cache, np.asarray(rows), pin=cuda)
        dev = {k: t.to(self.device, non_blocking=cuda) for k, t in host.items()}
        labels = dev.pop("labels")
        return dev, labels

    def loaded(self, chunks: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, dict, torch.Tensor]]:
        """(rows, raw views, labels) per chunk: prefetched in the background when self.prefetch > 0."""
        chunks = [np.asarray(c) for c in chunks]
        if self.prefetch > 0:
            yield from Prefetcher(self.cache, chunks, self.device, self.prefetch)
        else:
            for rows in chunks:
                yield (rows, *self.load(rows))

    # --- augmentation: raw windows -> model input ---
    def boxes(self, view: str, n: int, train: bool, generator: torch.Generator | None,
              part: tuple[int, int] | None = None) -> torch.Tensor | None:
        """Random boxes for n windows (drawn on the CPU, in the plain path's order), rows part[0]:part[1]."""
        margin = self.cache.spec.margin(view)
        if not (train and margin > 0):
            return None
        b = augment.sample_boxes(n, margin, generator)
        if part is not None:
            b = b[part[0]:part[1]]
        if self.device.type == "cuda":
            b = b.pin_memory().to(self.device, non_blocking=True)  # (n, 4) float32; no host sync
        return b

    def assemble(self, rows: np.ndarray, raw: dict, labels: torch.Tensor, train: bool,
                 generator: torch.Generator | None = None, n_draw: int | None = None,
                 part: tuple[int, int] | None = None) -> dict:
        """The batch dict from loaded windows. n_draw/part: draw boxes for n_draw windows (a global batch
        under DDP) and keep rows part[0]:part[1] of them, so every rank sees its slice of the same draw."""
        spec = self.cache.spec
        batch: dict = {}
        for view in VIEWS:
            boxes = self.boxes(view, n_draw or len(rows), train, generator, part)
            batch[view] = self._windows(raw[view], boxes, spec.size(view), self.resize_mode, self.dtype,
                                        self.channels_last, raw.get(f"{view}_heat"))
        batch["benign"], batch["malignant"] = labels[:, 0], labels[:, 1]
        batch["present"] = raw["present"]  # (B, 2) float32 [cc, mlo], 1 = the view exists
        batch["rows"] = rows
        return batch

    def make(self, rows: np.ndarray, train: bool, generator: torch.Generator | None = None) -> dict:
        """One batch, loaded now (the plain path)."""
        rows = np.asarray(rows)
        return self.assemble(rows, *self.load(rows), train, generator)

    def batches(self, chunks: Iterable[np.ndarray], train: bool, generator: torch.Generator | None = None,
                shard: tuple[int, int] = (0, 1)) -> Iterator[dict]:
        """Batches for a list of (global) row chunks; shard=(rank, world) keeps this rank's contiguous slice."""
        chunks = [np.asarray(c) for c in chunks]
        parts = [shard_bounds(len(c), *shard) for c in chunks]
        loaded = self.loaded([c[lo:hi] for c, (lo, hi) in zip(chunks, parts)])
        try:
            for k in range(len(chunks)):
                # The raw windows live only inside _next_batch: once the model input is made they are
                # unreferenced (freed while the consumer runs its step), not kept by this suspended frame.
                yield self._next_batch(loaded, train, generator, len(chunks[k]), parts[k])
        finally:
            loaded.close()  # an abandoned loop (max_steps) stops the prefetch thread now

    def _next_batch(self, loaded: Iterator, train: bool, generator: torch.Generator | None, n_draw: int,
                    part: tuple[int, int]) -> dict:
        rows, raw, labels = next(loaded)
        return self.assemble(rows, raw, labels, train, generator, n_draw=n_draw, part=part)


def maker_for(cfg: Config, cache: WindowCache, device: torch.device) -> BatchMaker:
    """The BatchMaker a config asks for (fast-path switches from cfg.run)."""
    r = cfg.run
    return BatchMaker(cache, device, channels_last=r.channels_last,
                      dtype=torch.bfloat16 if r.precision == "bf16" else torch.float32,
                      prefetch=r.prefetch, compile=r.compile)
