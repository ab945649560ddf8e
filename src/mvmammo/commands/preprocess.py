"""`mvmammo preprocess TABLE --out DIR`: flip, crop, best-centre and window every breast."""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("preprocess", help="cut CC/MLO windows (16-bit PNG) for every breast of an exam table")
    p.add_argument("table")
    p.add_argument("--out", required=True, help="output folder: images/, heatmaps/, exams.csv, preprocess_report.csv")
    p.add_argument("--window-cc", nargs=2, type=int, default=(2677, 1942), metavar=("H", "W"))
    p.add_argument("--window-mlo", nargs=2, type=int, default=(2974, 1748), metavar=("H", "W"))
    p.add_argument("--margin", type=int, default=100, metavar="PX",
                   help="augmentation margin added on every side of the window (default 100)")
    p.add_argument("--crop-margin", type=int, default=20, metavar="PX",
                   help="margin around the breast's bounding box (default 20)")
    p.add_argument("--background", type=int, default=0, metavar="V",
                   help="pixels <= V count as background in the crop mask (default 0, the reference rule; "
                        "scanned film with a noisy background needs more)")
    p.add_argument("--voi-lut", action="store_true", help="apply the DICOM VOI LUT / window when reading")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from mvmammo.data import exams
    from mvmammo.data.preprocess import PreprocessError, Settings, preprocess_table

    if min(args.window_cc + args.window_mlo) <= 0 or args.margin < 0:
        print("error: window sizes must be positive and the margin non-negative", file=sys.stderr)
        return 2
    settings = Settings(tuple(args.window_cc), tuple(args.window_mlo), args.margin, args.crop_margin, args.voi_lut,
                        args.background)
    try:
        table, report = preprocess_table(args.table, args.out, settings, args.workers, not args.no_progress)
    except (exams.TableError, FileNotFoundError, ValueError, PreprocessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dropped = report[report["status"] == "dropped"]
    for _, r in dropped.iterrows():
        print(f"dropped {r['breast_id']}: {r['reason']}", file=sys.stderr)
    print(f"{len(table)} breasts windowed, {len(dropped)} dropped; wrote {args.out}/exams.csv and "
          f"{args.out}/preprocess_report.csv")
    if len(table) == 0:
        print("error: no breast could be preprocessed", file=sys.stderr)
        return 1
    return 0
