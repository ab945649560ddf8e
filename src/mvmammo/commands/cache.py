"""`mvmammo cache TABLE`: decode every window once into the uint16 memory-mapped cache (resumable)."""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("cache", help="decode an exam table's windows once into a uint16 memory-mapped cache")
    p.add_argument("table")
    p.add_argument("--out", required=True, help="cache folder (an interrupted build resumes here)")
    p.add_argument("--size-cc", type=int, nargs=2, default=(2677, 1942), metavar=("H", "W"))
    p.add_argument("--size-mlo", type=int, nargs=2, default=(2974, 1748), metavar=("H", "W"))
    p.add_argument("--no-heatmaps", action="store_true", help="cache the image channel only")
    p.add_argument("--noise-px", type=float, default=100.0,
                   help="augmentation margin at full resolution (px of a 2677-px CC window)")
    p.add_argument("--verify", action="store_true", help="check every stored window against its checksum")
    p.set_defaults(func=run)


def run(args) -> int:
    from mvmammo.data import exams
    from mvmammo.data.cache import CacheError, build_cache

    try:
        df = exams.load_valid(args.table)
        cache = build_cache(df, args.out, tuple(args.size_cc), tuple(args.size_mlo), not args.no_heatmaps,
                            args.noise_px)
    except (exams.TableError, CacheError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    spec = cache.spec
    print(f"{args.out}: {len(cache)} breasts, CC {spec.stored_shape('cc')}, MLO {spec.stored_shape('mlo')} uint16 "
          f"(margins {spec.margin_cc}/{spec.margin_mlo} px)")
    if args.verify:
        bad = cache.verify()
        for line in bad:
            print(line)
        if bad:
            return 1
        print("all checksums match")
    return 0
