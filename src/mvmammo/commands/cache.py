"""`mvmammo cache TABLE --out DIR`: decode every window once into a window store (compressed, the default) or the
uint16 memory-mapped cache (`--format memmap`); resumable.

Train, evaluate and predict read the result with ``data.cache=DIR``; its own channels and sizes are used.
"""
from __future__ import annotations

FLAGS = {"heatmaps": "--no-heatmaps", "out": "--out"}  # how error messages name the options here


def register(sub) -> None:
    p = sub.add_parser("cache", help="decode an exam table's windows once into a window store (or memmap cache)",
                       description="Decode an exam table's windows once into a window cache (rebuilt where the "
                                   "table, its images or these options change; an interrupted build resumes). "
                                   "Use it in training with data.cache=DIR.")
    p.add_argument("table", help="exam table (CSV or Parquet) with windowed images (mvmammo preprocess)")
    p.add_argument("--out", required=True, help="cache folder (an interrupted build resumes here)")
    p.add_argument("--size-cc", type=int, nargs=2, default=(2677, 1942), metavar=("H", "W"), help="CC window stored, px (default 2677 1942: full resolution)")
    p.add_argument("--size-mlo", type=int, nargs=2, default=(2974, 1748), metavar=("H", "W"), help="MLO window stored, px (default 2974 1748: full resolution)")
    p.add_argument("--no-heatmaps", action="store_true", help="cache the image channel only")
    p.add_argument("--noise-px", type=float, default=100.0,
                   help="augmentation margin at full resolution, px (of a 2677-px CC / 2974-px MLO window)")
    p.add_argument("--stretch", action="store_true",
                   help="resize each axis separately (default: keep the aspect ratio, zero-pad right/bottom)")
    p.add_argument("--allow-missing-view", action="store_true",
                   help="keep breasts with one view (the absent view is stored as zeros)")
    p.add_argument("--no-labels", action="store_true", help="allow an unlabelled table (labels stored as -1)")
    p.add_argument("--format", choices=["store", "memmap"], default="store",
                   help="store: lossless compressed shards + Parquet index, heatmaps on a coarser grid (default; "
                        "docs/scale.md); memmap: uint16 memory-mapped arrays (71 MB per breast at full size)")
    p.add_argument("--workers", type=int, default=0, help="store: encoding processes (default: all cores)")
    p.add_argument("--heat-factor", type=int, default=0,
                   help="store: heatmap grid this many times coarser than the window (default: 8 at full "
                        "resolution, 1 at demo scale)")
    p.add_argument("--verify", action="store_true", help="check every stored window against its checksum")
    p.set_defaults(func=run)


def run(args) -> int:
    from mvmammo.data import exams
    from mvmammo.data.cache import CacheError, build_cache

    for flag, size in (("--size-cc", args.size_cc), ("--size-mlo", args.size_mlo)):
        if min(size) <= 0:
            raise CacheError(f"{flag} {size[0]} {size[1]}: window sizes must be positive")
    if args.noise_px < 0:
        raise CacheError(f"--noise-px {args.noise_px:g}: must be >= 0")
    df = exams.load_valid(args.table, allow_missing_view=args.allow_missing_view,
                          require_labels=not args.no_labels)
    if args.format == "store":
        import os

        from mvmammo.data.cache import make_spec
        from mvmammo.data.store import build_store

        if not args.no_heatmaps:
            missing = [c for c in exams.HEATMAP_COLUMNS if c not in df.columns]
            if missing:
                raise CacheError(f"{args.table}: no {', '.join(missing)} column(s) for the heatmap channels; "
                                 "pass --no-heatmaps to store the image channel only")
        spec = make_spec(args.size_cc, args.size_mlo, not args.no_heatmaps, args.noise_px,
                         keep_aspect=not args.stretch)
        cache = build_store(df, args.out, spec, heat_factor=args.heat_factor or None,
                            workers=args.workers or (os.cpu_count() or 1), progress=True)
    else:
        cache = build_cache(df, args.out, tuple(args.size_cc), tuple(args.size_mlo), not args.no_heatmaps,
                            args.noise_px, keep_aspect=not args.stretch, flags=FLAGS)
    spec = cache.spec
    one_view = int((~cache.present().all(axis=1)).sum())
    print(f"{args.out}: {len(cache)} breasts ({one_view} with one view), CC {spec.stored_shape('cc')}, "
          f"MLO {spec.stored_shape('mlo')} ({args.format}; margins {spec.margin_cc}/{spec.margin_mlo} px, "
          f"{'aspect kept' if spec.keep_aspect else 'stretched'}); train with data.cache={args.out}")
    if args.verify:
        bad = cache.verify()
        for line in bad:
            print(line)
        if bad:
            return 1
        print("all checksums match")
    return 0
