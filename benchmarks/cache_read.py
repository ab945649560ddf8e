"""Read throughput of the uint16 window cache: windows/s for random batches, one process vs N workers.

It writes a synthetic cache in the real file layout (benchmarks/synthetic_cache.py), then times
``WindowCache.load`` on random batches of rows, (a) in this process and (b) in N worker processes
reading disjoint batches at once. A "window" is one view of one breast, all channels. The page cache is
dropped only when --drop-caches is given and permitted (root); otherwise reads after the first pass come
from memory, which is what training sees once the cache fits in RAM.

  python benchmarks/cache_read.py --size full --breasts 24 --channels 1 --workers 2
  python benchmarks/cache_read.py --size small --breasts 512        (CPU-sized, seconds)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_cache import write_cache  # noqa: E402

from mvmammo.data.cache import WindowCache  # noqa: E402


def _read(root: str, batches: list[list[int]]) -> int:
    cache = WindowCache(root)
    n = 0
    for rows in batches:
        for view in ("cc", "mlo"):
            n += len(cache.load(np.asarray(rows), view))
    return n


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/mvmammo_cache_bench")
    p.add_argument("--size", choices=["full", "small"], default="small")
    p.add_argument("--breasts", type=int, default=256)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--batches", type=int, default=64)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = p.parse_args(argv)
    root = Path(args.out)
    write_cache(root, args.breasts, args.size, args.channels)
    cache = WindowCache(root)
    bytes_per_window = sum(cache.arrays[v][0].nbytes for v in ("cc", "mlo")) / 2
    rng = np.random.default_rng(0)
    batches = [rng.choice(args.breasts, args.batch, replace=False).tolist() for _ in range(args.batches)]
    _read(str(root), batches[:4])  # warm-up: open files, first touch
    t0 = time.perf_counter()
    n1 = _read(str(root), batches)
    one = n1 / (time.perf_counter() - t0)
    shards = [batches[i::args.workers] for i in range(args.workers)]
    with ProcessPoolExecutor(args.workers) as pool:
        list(pool.map(_read, [str(root)] * args.workers, [s[:1] for s in shards]))  # start the workers
        t0 = time.perf_counter()
        nn = sum(pool.map(_read, [str(root)] * args.workers, shards))
        many = nn / (time.perf_counter() - t0)
    result = {"size": args.size, "channels": args.channels, "batch": args.batch,
              "mb_per_window": round(bytes_per_window / 2**20, 2), "windows_per_s_1_process": round(one, 1),
              f"windows_per_s_{args.workers}_workers": round(many, 1), "ratio": round(many / one, 2)}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
