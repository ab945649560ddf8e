"""A synthetic window cache for benchmarks: random uint16 windows in the cache's own file layout, written
directly (decoding full-resolution PNGs would take minutes and measures nothing we time).

Contents are noise with an image-like range (0..4095) in channel 0 and full-range heatmaps; throughput
does not depend on the values. Labels alternate so every batch has positives.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from mvmammo import VIEWS
from mvmammo.data.cache import CacheSpec, WindowCache, margins

SIZES = {  # (H, W) of the CC and MLO windows, full height for the augmentation margin
    "full": ((2677, 1942), (2974, 1748), 2677),
    "small": ((128, 96), (128, 96), 2677),
}


def write_cache(root: str | Path, breasts: int, size: str = "full", channels: int = 3, seed: int = 0,
                noise_px: float = 100.0) -> WindowCache:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    size_cc, size_mlo, full_h = SIZES[size]
    m_cc, m_mlo = margins(size_cc, size_mlo, noise_px, full_h)  # each view's margin by its own height
    spec = CacheSpec(size_cc=size_cc, size_mlo=size_mlo, margin_cc=m_cc, margin_mlo=m_mlo, channels=channels,
                     table_sha="synthetic-benchmark")
    rng = np.random.default_rng(seed)
    for view in VIEWS:
        shape = spec.stored_shape(view)  # (C, H + 2m, W + 2m)
        arr = np.lib.format.open_memmap(root / f"{view}.npy", mode="w+", dtype=np.uint16,
                                        shape=(breasts,) + shape)
        base = rng.integers(0, 4096, size=shape, dtype=np.uint16)
        base[1:] = rng.integers(0, 65536, size=(shape[0] - 1,) + shape[1:], dtype=np.uint16)
        for i in range(breasts):  # cheap per-row variation: a row-dependent offset on the image channel
            arr[i] = base
            arr[i, 0] += np.uint16(17 * i)
        arr.flush()
        del arr
    np.save(root / "done.npy", np.ones(breasts, dtype=bool))
    np.save(root / "checksums.npy", np.zeros((breasts, 2), dtype=np.uint32))
    ids = [f"b{i:04d}" for i in range(breasts)]
    pd.DataFrame({"breast_id": ids, "patient_id": [f"p{i // 2:04d}" for i in range(breasts)],
                  "split": "train", "benign": [int(i % 3 == 0) for i in range(breasts)],
                  "malignant": [int(i % 4 == 1) for i in range(breasts)]}).to_csv(root / "index.csv", index=False)
    (root / "meta.json").write_text(json.dumps({"spec": asdict(spec)}, indent=2))
    return WindowCache(root)
