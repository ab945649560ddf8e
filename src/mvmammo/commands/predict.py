"""`mvmammo predict RUN [RUN ...] (--table T | --dicom DIR) --out predictions.csv`: apply trained runs to new
exams (no labels, no splits); several runs are ensembled (mean probability)."""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("predict", help="per-breast predictions of trained run(s) on a new exam table or DICOM folder",
                       description="Per breast: p_benign, p_malignant (mean over the runs and TTA windows), the "
                                   "views used, each view's contribution and any warning. A table of raw images "
                                   "is preprocessed on the way (mvmammo preprocess defaults).")
    p.add_argument("runs", nargs="+", metavar="RUN", help="trained run folder(s); several = ensemble")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--table", help="exam table (CSV/Parquet); labels and split columns are not needed")
    src.add_argument("--dicom", metavar="DIR", help="a folder of DICOM files (searched recursively)")
    p.add_argument("--out", required=True, help="predictions CSV (written atomically)")
    p.add_argument("--work", default=None, metavar="DIR",
                   help="work folder for preprocessed windows and caches (default: <out stem>_work next to --out)")
    p.add_argument("--tta", type=int, default=None,
                   help="random windows per breast (0 = centre window; default: each run's run.tta)")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="which checkpoint of each run: best (validation AUC) or last")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: each run's run.device: GPU "
                                                  "when present)")
    p.add_argument("--workers", type=int, default=1, help="preprocessing processes (default 1)")
    heatmap_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def heatmap_options(p) -> None:
    """--patch-model, --heatmap-mode, --heatmap-stride (predict and evaluate --table)."""
    p.add_argument("--patch-model", default=None, metavar="PATCH_RUN",
                   help="for runs trained with heatmap channels on a table without them: make the heatmaps on "
                        "the way with this patch classifier (mvmammo patches train / weights import-nyu), as "
                        "`mvmammo heatmaps` would, into the work folder")
    p.add_argument("--heatmap-mode", default="patches", choices=("patches", "dense"),
                   help="with --patch-model: patches (NYU-exact, default) or dense (approximate, faster); use "
                        "what the run's training heatmaps were made with")
    p.add_argument("--heatmap-stride", type=int, default=70, help="with --patch-model: grid stride, px (default 70)")


def heatmap_maker(args, progress: bool):
    """None, or (table, work folder) -> the table with heatmap columns: the heatmap stage, handed to the
    evaluation (which does not import it)."""
    from mvmammo.errors import UsageError

    if not args.patch_model:
        return None
    if args.heatmap_stride < 1:
        raise UsageError(f"--heatmap-stride {args.heatmap_stride}: must be >= 1 px")

    def make(table, work):
        from mvmammo.heatmaps.table import heatmaps_in_work

        return heatmaps_in_work(table, work, args.patch_model, args.heatmap_mode, args.heatmap_stride, args.device,
                                progress)
    return make


def run(args) -> int:
    from pathlib import Path

    from mvmammo.errors import UsageError
    from mvmammo.evaluation.apply import predict_table, write_csv_atomic

    if args.tta is not None and args.tta < 0:
        raise UsageError(f"--tta {args.tta}: give 0 (centre window) or a positive number of windows")
    out = Path(args.out)
    work = Path(args.work) if args.work else out.parent / f"{out.stem}_work"
    progress = not args.no_progress
    table, notes = args.table, None
    if args.dicom:
        from mvmammo.data import exams
        from mvmammo.data.sources import dicom_folder

        found, skipped, notes = dicom_folder.walk(args.dicom, progress)
        skipped_path = out.parent / f"{out.stem}_skipped.csv"
        write_csv_atomic(skipped, skipped_path)
        print(dicom_folder.summary(found, skipped, skipped_path), file=sys.stderr)
        if not len(found):
            raise UsageError(f"{args.dicom}: no usable mammogram (MG, CC or MLO) found; see {skipped_path}")
        table = work / "dicom_exams.csv"
        work.mkdir(parents=True, exist_ok=True)
        exams.write_table(found, table)
    heat = heatmap_maker(args, progress)
    res = predict_table(args.runs, table, out, work, args.tta, args.checkpoint, args.device, args.workers, progress,
                        notes, heatmaps=heat)
    done = int(res["p_malignant"].notna().sum())
    warned = int((res["warning"] != "").sum())
    print(f"{done} of {len(res)} breasts predicted by {len(args.runs)} run(s); {warned} with a warning; "
          f"wrote {out}")
    return 0 if done else 1
