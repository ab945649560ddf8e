"""`mvmammo heatmaps TABLE --patch-model RUN --out DIR`: benign/malignant heatmaps from a patch classifier."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("heatmaps", help="make the benign/malignant heatmap channels with a patch classifier",
                       description="Run a patch classifier over every image of an exam table (all patches on a "
                                   "grid, probabilities averaged per pixel) and write the heatmaps plus a copy "
                                   "of the table with the four heatmap columns. Resumable: rerun to continue.")
    p.add_argument("table", help="exam table of preprocessed images (mvmammo preprocess)")
    p.add_argument("--patch-model", required=True,
                   help="run folder of `mvmammo patches train` or `mvmammo weights import-nyu`")
    p.add_argument("--out", required=True, help="output folder (maps/, heatmaps.json, the new table)")
    p.add_argument("--stride", type=int, default=70, help="grid stride in px (default 70, as NYU)")
    p.add_argument("--batch-size", type=int, default=256, help="patches per forward pass (default 256)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    p.add_argument("--mode", choices=("patches", "dense"), default="patches",
                   help="patches: every grid patch through the classifier, NYU-exact (default); dense: the "
                        "classifier's features once over the whole crop, pooled per patch (approximate, ~10x "
                        "fewer FLOPs at 256/70; docs/heatmaps.md 'Speed')")
    p.add_argument("--workers", type=int, default=None,
                   help="host threads that read, prepare and write images while the device runs the network "
                        "(default: the usable cores, at most 16; 0: one image at a time on one thread)")
    p.add_argument("--overwrite", action="store_true", help="redo every image (default: skip finished ones)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from mvmammo.heatmaps.table import make_heatmaps

    s = make_heatmaps(args.table, args.patch_model, args.out, stride=args.stride, batch_size=args.batch_size,
                      device=args.device, overwrite=args.overwrite, progress=not args.quiet, mode=args.mode,
                      workers=args.workers)
    rate = s["images"] / s["seconds"] if s["seconds"] > 0 and s["images"] else 0.0
    work = (f"{s['patches']} patches ({s['computed']} through the network, the rest constant)"
            if s["mode"] == "patches" else f"{s['patches']} patches pooled from dense features")
    print(f"{s['table']}: {s['images']} images done, {s['skipped']} already there; {work} on "
          f"{s['device']} ({rate:.2f} images/s)")
    return 0
