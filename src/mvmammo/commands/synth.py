"""`mvmammo synth`: write the embedded synthetic two-view cohort (exam table, 16-bit PNGs, oracle)."""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("synth", help="generate the synthetic two-view cohort (exams.csv + 16-bit PNGs + oracle)")
    p.add_argument("--preset", default="paper",
                   help="balanced | cc-only | mlo-only | complementary | paper (default: paper)")
    p.add_argument("--breasts", type=int, default=600, help="number of breasts (2 per patient; default 600)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=(128, 96),
                   help="image size of both views (default 128 96; full size: use the Python API for "
                        "2677x1942 CC / 2974x1748 MLO, or --size-mlo)")
    p.add_argument("--size-mlo", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="MLO size when it differs from --size (which then sets CC only)")
    p.add_argument("--seed", type=int, default=0, help="seed of the cohort (same seed, same cohort, whatever the workers; default 0)")
    p.add_argument("--out", required=True, help="output folder (exams.csv, images/, heatmaps/, oracle.json)")
    p.add_argument("--no-heatmaps", action="store_true", help="skip the benign/malignant heatmap channels")
    p.add_argument("--preview", action="store_true", help="also write OUT/preview.png (a montage)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from mvmammo.data.synthetic import PRESETS, generate_cohort
    from mvmammo.data.synthetic.preview import write_preview

    if args.preset not in PRESETS:
        print(f"error: unknown preset {args.preset!r}; one of {', '.join(sorted(PRESETS))}", file=sys.stderr)
        return 2
    size_cc = tuple(args.size)
    size_mlo = tuple(args.size_mlo) if args.size_mlo else size_cc
    try:
        s = generate_cohort(args.out, preset=args.preset, breasts=args.breasts, size_cc=size_cc,
                            size_mlo=size_mlo, seed=args.seed, heatmaps=not args.no_heatmaps,
                            workers=args.workers, progress=not args.quiet)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    how = "cached, unchanged" if s["cached"] else f"{s['seconds']:.1f} s"
    print(f"{s['table']}: {s['breasts']} breasts, {s['patients']} patients ({how})")
    print("splits: " + ", ".join(f"{k} {v}" for k, v in s["by_split"].items())
          + f"; prevalence malignant {s['prevalence']['malignant']:.1%}, benign {s['prevalence']['benign']:.1%}")
    o = s["oracle"]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"oracle malignant AUC ({o['split']} split): CC {fmt(o['auc_cc'])}  MLO {fmt(o['auc_mlo'])}  "
          f"both {fmt(o['auc_both'])}")
    b = o["benign"]
    print(f"oracle benign AUC    ({o['split']} split): CC {fmt(b['auc_cc'])}  MLO {fmt(b['auc_mlo'])}  "
          f"both {fmt(b['auc_both'])}")
    if args.preview:
        print(f"preview: {write_preview(args.out)}")
    return 0
