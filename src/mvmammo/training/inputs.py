"""From a config to batches: resolve the exam table (the synthetic cohort by default), build or reuse the
window cache, and turn cache rows into model-ready batches on the target device.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mvmammo import VIEWS
from mvmammo.config import Config
from mvmammo.data import augment, exams
from mvmammo.data.cache import WindowCache, build_cache


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


@dataclass
class BatchMaker:
    """Cache rows -> {"cc", "mlo": (B, C, H, W) float32, "benign", "malignant": (B,), "rows": (B,)}."""

    cache: WindowCache
    device: torch.device
    channels_last: bool = False
    resize_mode: str = "bilinear"

    def make(self, rows: np.ndarray, train: bool, generator: torch.Generator | None = None) -> dict:
        spec = self.cache.spec
        batch: dict = {}
        for view in VIEWS:
            raw = torch.from_numpy(self.cache.load(rows, view).astype(np.float32))
            if self.device.type == "cuda":
                raw = raw.pin_memory().to(self.device, non_blocking=True)
            x = augment.make_views(raw, spec.size(view), spec.margin(view), train, generator, self.resize_mode)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            batch[view] = x
        labels = torch.from_numpy(self.cache.labels(rows)).to(self.device)
        batch["benign"], batch["malignant"] = labels[:, 0], labels[:, 1]
        batch["rows"] = rows
        return batch
