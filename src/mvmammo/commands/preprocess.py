"""`mvmammo preprocess TABLE --out DIR`: resample, mask, flip, crop, best-centre and window every breast."""
from __future__ import annotations

import argparse
import sys


def _background(text: str):
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use 'auto' or an integer intensity") from None


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive number of mm")
    return v


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a fraction of the image in [0, 1)")
    return v


def register(sub) -> None:
    p = sub.add_parser("preprocess", help="cut CC/MLO windows (16-bit PNG) for every breast of an exam table")
    p.add_argument("table", help="exam table of raw images (CSV or Parquet; mvmammo import writes one)")
    p.add_argument("--out", required=True, help="output folder: images/, heatmaps/, exams.csv, preprocess_report.csv")
    p.add_argument("--window-cc", nargs=2, type=int, default=(2677, 1942), metavar=("H", "W"), help="CC window cut around the breast, px (default 2677 1942, the paper's)")
    p.add_argument("--window-mlo", nargs=2, type=int, default=(2974, 1748), metavar=("H", "W"), help="MLO window cut around the breast, px (default 2974 1748, the paper's)")
    p.add_argument("--margin", type=int, default=100, metavar="PX",
                   help="augmentation margin added on every side of the window (default 100)")
    p.add_argument("--crop-margin", type=int, default=20, metavar="PX",
                   help="margin around the breast's bounding box (default 20)")
    p.add_argument("--background", type=_background, default="auto", metavar="auto|V",
                   help="background threshold of the breast mask: 'auto' (default) chooses it per image (flat "
                        "digital background or noisy film, see docs/preprocessing.md); an integer V makes "
                        "pixels <= V background for every image (0 = the reference rule)")
    p.add_argument("--min-breast-area", type=_fraction, default=0.01, metavar="F",
                   help="drop an image whose breast covers less than this share of it (default 0.01)")
    p.add_argument("--spacing", type=_positive, default=None, metavar="MM",
                   help="resample every image (and its heatmaps) to MM per pixel before cropping (default: "
                        "no resampling). Source spacing: DICOM PixelSpacing/ImagerPixelSpacing, else the table's "
                        "cc_/mlo_pixel_spacing or pixel_spacing column, else --source-spacing")
    p.add_argument("--source-spacing", type=_positive, default=None, metavar="MM",
                   help="spacing of images that carry none (e.g. one scanner's film); without it such breasts "
                        "are dropped when --spacing is given")
    p.add_argument("--allow-missing-view", action="store_true",
                   help="window one-view breasts (the absent view's path stays empty)")
    p.add_argument("--voi-lut", action="store_true", help="apply the DICOM VOI LUT / window when reading")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from mvmammo.data.preprocess import Settings
    from mvmammo.data.preprocess_table import preprocess_table
    from mvmammo.errors import UsageError

    if min(args.window_cc + args.window_mlo) <= 0 or args.margin < 0 or args.crop_margin < 0:
        raise UsageError("window sizes must be positive and --margin / --crop-margin non-negative")
    settings = Settings(tuple(args.window_cc), tuple(args.window_mlo), args.margin, args.crop_margin, args.voi_lut,
                        args.background, args.min_breast_area, args.spacing, args.source_spacing,
                        args.allow_missing_view)
    table, report = preprocess_table(args.table, args.out, settings, args.workers, not args.no_progress)
    dropped = report[report["status"] == "dropped"]
    for _, r in dropped.iterrows():
        print(f"dropped {r['breast_id']}: {r['reason']}", file=sys.stderr)
    wrote = f"{args.out}/exams.csv and " if len(table) else ""
    print(f"{len(table)} breasts windowed, {len(dropped)} dropped; wrote {wrote}{args.out}/preprocess_report.csv")
    _print_warnings(report)
    if len(table) == 0:
        from mvmammo.data.preprocess import PreprocessError

        first = dropped["reason"].iloc[0] if len(dropped) else "no rows"
        raise PreprocessError(f"{args.table}: no breast could be preprocessed (first: {first}); "
                              f"see {args.out}/preprocess_report.csv")
    return 0


def _print_warnings(report) -> None:
    """One summary line per kind of warning, with the first few breasts; the report has them all."""
    kinds = {"cut by the window": [], "fills": [], "no image": []}
    for _, r in report.iterrows():
        text = r.get("warning", "")
        if not isinstance(text, str):
            continue
        for kind, ids in kinds.items():
            if kind in text:
                ids.append(str(r["breast_id"]))
    labels = {"cut by the window": "breast cut by the window", "fills": "breast fills < 20% of the window",
              "no image": "one-view breast"}
    for kind, ids in kinds.items():
        if ids:
            more = f" ... and {len(ids) - 3} more" if len(ids) > 3 else ""
            print(f"warning: {len(ids)} breasts: {labels[kind]} ({', '.join(ids[:3])}{more}); "
                  "see preprocess_report.csv", file=sys.stderr)
