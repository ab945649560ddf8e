"""From a config to batches: resolve the exam table (the synthetic cohort by default), build or reuse the
window cache, and turn cache rows into model-ready batches on the target device.

The data path, fast or plain, is: uint16 windows (B, C, H + 2m, W + 2m) from the memory-mapped cache ->
int16 bytes in (pinned) host memory -> device (non-blocking) -> values 0..65535 as float32 on the device ->
random window (one affine_grid + grid_sample) -> standardise -> model dtype and memory format. The
prefetching variant (run.prefetch > 0) moves the first three arrows to a background thread; random boxes are
always drawn here, in the consumer, so both variants give identical batches.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from mvmammo import VIEWS
from mvmammo.config import Config
from mvmammo.data import augment, exams
from mvmammo.data.cache import WindowCache, build_cache
from mvmammo.training.accel import compile_or_eager
from mvmammo.training.prefetch import Prefetcher, fill_pinned


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
    table_path = resolve_table(cfg, progress)
    df = exams.load_valid(table_path)
    d = cfg.data
    tag = f"{table_path.parent.name}-{d.size_cc[0]}x{d.size_cc[1]}-{d.size_mlo[0]}x{d.size_mlo[1]}" \
          f"-c{3 if d.heatmaps else 1}-m{d.aug_noise_px:g}"
    root = cache_root(cfg) / "windows" / tag
    return build_cache(df, root, d.size_cc, d.size_mlo, d.heatmaps, d.aug_noise_px, d.full_height, progress)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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


def windows(raw: torch.Tensor, boxes: torch.Tensor | None, size: tuple[int, int], mode: str = "bilinear",
            dtype: torch.dtype = torch.float32, channels_last: bool = False) -> torch.Tensor:
    """Cached windows (B, C, Hp, Wp) int16/uint16 bits -> network input (B, C, H, W) in ``dtype``.

    boxes: (B, 3) (ds, dy, dx) on raw's device, or None for the centre window. A pure function of its
    tensors, so torch.compile can fuse the conversion, resampling and standardisation.
    """
    x = augment.normalise(augment.crop_resize(raw_to_float(raw), size, boxes, mode)).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def pinned_batch(cache: WindowCache, rows: np.ndarray, pin: bool) -> dict[str, torch.Tensor]:
    """{view: int16 (B, C, Hp, Wp), "labels": int64 (B, 2)} in host memory (pinned when pin)."""
    out = {}
    for view in VIEWS:
        shape = (len(rows),) + tuple(cache.arrays[view].shape[1:])
        out[view] = fill_pinned(cache.arrays[view], rows, torch.empty(shape, dtype=torch.int16, pin_memory=pin))
    out["labels"] = torch.from_numpy(cache.labels(rows))
    if pin:
        out["labels"] = out["labels"].pin_memory()
    return out


@dataclass
class BatchMaker:
    """Cache rows -> {"cc", "mlo": (B, C, H, W), "benign", "malignant": (B,), "rows": (B,)}.

    dtype: of the views (float32; bfloat16 under bf16 autocast, where the first convolution would round
    to it anyway). prefetch: batches loaded ahead by :meth:`batches` (0 = load on demand).
    compile: run :func:`windows` through torch.compile (falls back to eager with a warning).
    """

    cache: WindowCache
    device: torch.device
    channels_last: bool = False
    resize_mode: str = "bilinear"
    dtype: torch.dtype = torch.float32
    prefetch: int = 0
    compile: bool = False
    _windows: object = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        _uint16_view_ok(self.device)  # probe now (it syncs), not inside a compiled or timed step
        self._windows = compile_or_eager(windows, self.compile, "augmentation")

    # --- loading: cache rows -> int16 windows on the device ---
    def load(self, rows: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """({view: int16 (B, C, Hp, Wp)}, labels (B, 2)) on the device, without a host synchronisation."""
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
            b = b.pin_memory().to(self.device, non_blocking=True)  # 48 bytes; no host sync
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
                                        self.channels_last)
        batch["benign"], batch["malignant"] = labels[:, 0], labels[:, 1]
        batch["rows"] = rows
        return batch

    def make(self, rows: np.ndarray, train: bool, generator: torch.Generator | None = None) -> dict:
        """One batch, loaded now (the plain path)."""
        rows = np.asarray(rows)
        return self.assemble(rows, *self.load(rows), train, generator)

    def batches(self, chunks: Iterable[np.ndarray], train: bool, generator: torch.Generator | None = None,
                shard: tuple[int, int] = (0, 1)) -> Iterator[dict]:
        """Batches for a list of (global) row chunks; shard=(rank, world) keeps this rank's contiguous slice."""
        from mvmammo.training.distributed import shard_bounds

        chunks = [np.asarray(c) for c in chunks]
        parts = [shard_bounds(len(c), *shard) for c in chunks]
        local = [c[lo:hi] for c, (lo, hi) in zip(chunks, parts)]
        for c, part, (rows, raw, labels) in zip(chunks, parts, self.loaded(local)):
            yield self.assemble(rows, raw, labels, train, generator, n_draw=len(c), part=part)


def maker_for(cfg: Config, cache: WindowCache, device: torch.device) -> BatchMaker:
    """The BatchMaker a config asks for (fast-path switches from cfg.run)."""
    r = cfg.run
    return BatchMaker(cache, device, channels_last=r.channels_last,
                      dtype=torch.bfloat16 if r.precision == "bf16" else torch.float32,
                      prefetch=r.prefetch, compile=r.compile)
