"""The window store at full resolution: bytes per breast, build time, decode speed, windows/s into memory,
and what storing the heatmaps at 1/8 resolution changes.

It generates N full-size breasts of the synthetic `paper` cohort (CC 2677x1942, MLO 2974x1748 windows, heatmaps
on), builds the store (heatmap factor 8) with all cores, and measures against the memory-mapped cache's layout
(uint16 x 3 channels, computed from its geometry) in the same invocation:
  - bytes per breast (target <= 12 MB; the memmap cache: ~71 MB) and the build time, extrapolated per 1,000
  - decode GB/s of one core (image channel, uncompressed bytes out per second)
  - windows/s decoded from the store into (pinned, when CUDA is present) batch buffers with 1, 2, all threads
  - max |heatmap(1/8, upsampled) - heatmap(full)| over all stored windows, in probability units

  python benchmarks/store.py --breasts 24 --out /tmp/store-bench      (about 5-10 minutes on 2 cores)
  python benchmarks/store.py --breasts 1000 --build-only --out DIR    (the 1,000-breast build: time and size only)

CPU seconds (this process and its build workers, from getrusage) are recorded beside the wall-clock times, so a
build timed on a machine shared with other jobs still says what it costs.

Writes benchmarks/results/store-<date>.json; the table in benchmarks/RESULTS.md is copied from its output.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import save_result  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--breasts", type=int, default=24)
    p.add_argument("--out", default="/tmp/mvmammo-store-bench")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--batches", type=int, default=12, help="random batches of 4 breasts per thread count")
    p.add_argument("--size", choices=["full", "small"], default="full",
                   help="full: the paper's windows; small: 256x192 (a quick dry run of this script)")
    p.add_argument("--build-only", action="store_true",
                   help="generate and build, then record time and size only (skip decode, read and heatmap checks)")
    args = p.parse_args(argv)

    import torch

    from mvmammo.data import exams
    from mvmammo.data.cache import HEATMAP_SCALE, read_view, make_spec
    from mvmammo.data.store import build_store
    from mvmammo.data.store import format as fmt
    from mvmammo.data.store.loader import fill
    from mvmammo.data.store.reader import upsample_heat
    from mvmammo.data.synthetic import generate_cohort

    out = Path(args.out)
    sizes = ((2677, 1942), (2974, 1748)) if args.size == "full" else ((256, 192), (256, 192))
    cohort = out / f"cohort-{args.size}"
    t0, c0 = time.time(), _cpu_s()
    if not (cohort / "exams.csv").exists():
        generate_cohort(cohort, preset="paper", breasts=args.breasts, size_cc=sizes[0], size_mlo=sizes[1],
                        seed=0, heatmaps=True, progress=True, workers=args.workers)
    t_synth, cpu_synth = time.time() - t0, _cpu_s() - c0
    df = exams.load_valid(cohort / "exams.csv")
    spec = make_spec(sizes[0], sizes[1], heatmaps=True, noise_px=100.0)
    store_dir = out / "store"
    import shutil

    shutil.rmtree(store_dir, ignore_errors=True)
    t0, c0 = time.time(), _cpu_s()
    factor = 8 if args.size == "full" else None  # full: 1/8 heatmaps as the store's rule; small: its own rule
    store = build_store(df, store_dir, spec, heat_factor=factor, workers=args.workers, progress=True)
    t_build, cpu_build = time.time() - t0, _cpu_s() - c0
    stored = sum(f.stat().st_size for f in (store_dir / "shards").glob("*.bin"))
    index_bytes = (store_dir / "index.parquet").stat().st_size
    memmap_per_breast = sum(spec.row_bytes(v) for v in ("cc", "mlo"))
    n = len(df)
    result = {
        "date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": "python benchmarks/store.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "size": args.size, "breasts": n, "heat_factor": store.heat_factor, "codec": fmt.CODEC,
        "bytes_per_breast": stored / n, "mb_per_breast": stored / n / 1e6,
        "memmap_mb_per_breast": memmap_per_breast / 1e6, "ratio_vs_memmap": memmap_per_breast * n / stored,
        "index_bytes": index_bytes, "build_s": t_build, "build_s_per_1000": t_build / n * 1000,
        "build_cpu_s": cpu_build, "build_cpu_s_per_breast": cpu_build / n,
        "gb_per_1000": stored / n * 1000 / 1e9, "synth_s": t_synth, "synth_cpu_s": cpu_synth,
        "build_workers": args.workers, "load_avg_1min_at_end": os.getloadavg()[0],
    }
    if args.build_only:
        return save_result(result, f"store-{args.size}-{n}-{result['date']}.json")

    # Decode speed of one core: every record's image, uncompressed bytes out per second.
    _, hp, wp = spec.stored_shape("cc")
    buf = np.empty((hp, wp), dtype=np.uint16)
    raw_bytes, t0 = 0, time.perf_counter()
    for i in range(n):
        image, _ = store._record(i, "cc")
        fmt.decompress_into(image, buf)
        raw_bytes += buf.nbytes
    decode_gbs = raw_bytes / (time.perf_counter() - t0) / 1e9

    # Windows/s into batch buffers (pinned when CUDA is present), random batches of 4 breasts, both views.
    pin = torch.cuda.is_available()
    rng = np.random.default_rng(0)
    rates = {}
    for threads in sorted({1, 2, os.cpu_count() or 1}):
        bufs = {v: (torch.empty((4, 1, *spec.stored_shape(v)[1:]), dtype=torch.int16, pin_memory=pin),
                    torch.empty((4, 2, *store.heat_shape(v)), dtype=torch.float16, pin_memory=pin)) for v in ("cc", "mlo")}
        t0, windows = time.perf_counter(), 0
        for _ in range(args.batches):
            rows = rng.choice(n, size=min(4, n), replace=False)
            for v in ("cc", "mlo"):
                img, heat = bufs[v]
                fill(store, v, rows, img.numpy().view(np.uint16), heat.numpy(), threads=threads)
                windows += len(rows)
        rates[threads] = windows / (time.perf_counter() - t0)

    # Heatmaps at 1/8 vs full resolution, in probability units.
    max_diff, diffs = 0.0, []
    for i in range(n):
        for v in ("cc", "mlo"):
            full = read_view(df, df.iloc[i], v, spec)[1:].astype(np.float32) / HEATMAP_SCALE
            _, heat = store.load_parts(np.array([i]), v)
            up = upsample_heat(torch.from_numpy(heat.astype(np.float32)), full.shape[-2:])[0].numpy()
            d = np.abs(up - full)
            max_diff = max(max_diff, float(d.max()))
            diffs.append((float(d.mean()), float(np.quantile(d, 0.999)), float((d > 0.05).mean())))

    result.update({
        "decode_gb_s_one_core": decode_gbs, "windows_per_s": {str(k): v for k, v in rates.items()},
        "pinned": pin, "heatmap_max_abs_diff": max_diff,
        "heatmap_mean_abs_diff": float(np.mean([x[0] for x in diffs])),
        "heatmap_p999_abs_diff": float(np.max([x[1] for x in diffs])),
        "heatmap_share_over_0.05": float(np.mean([x[2] for x in diffs])),
    })
    return save_result(result, f"store-{args.size}-{result['date']}.json")


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and of its finished children (the build workers)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


if __name__ == "__main__":
    main()
