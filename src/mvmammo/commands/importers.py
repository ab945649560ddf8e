"""`mvmammo import FORMAT ... --out TABLE`: a public dataset's files -> the exam table + an import report."""
from __future__ import annotations

import argparse
from pathlib import Path

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def _common(p) -> None:
    p.add_argument("--out", required=True, help="exam table to write (.csv or .parquet); the report goes next to "
                                                "it as <name>_import_report.json")
    p.add_argument("--split-fractions", nargs=3, type=float, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VAL", "TEST"),
                   help="patient fractions when the source has no official split (default 0.8 0.1 0.1)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of official-train patients moved to val (sources with an official split)")
    p.add_argument("--seed", type=int, default=0, help="seed of the patient split (default 0)")
    p.add_argument("--allow-missing-view", action="store_true",
                   help="keep breasts with only one of CC / MLO (the other path left empty); default: drop them "
                        "with the reason in the report")


def register(sub) -> None:
    p = sub.add_parser("import", help="import a dataset (nyu, cbis, cmmd, vindr, rsna, embed, csv) as an exam table")
    fmt = p.add_subparsers(dest="format", metavar="FORMAT", required=True)

    q = fmt.add_parser("nyu", help="NYU exam-list pickle (loaded safely: no code runs)")
    q.add_argument("exam_list", help="NYU exam-list pickle (read with a restricted unpickler: no code runs)")
    q.add_argument("--images", help="folder of <stem>.png (default: <exam list folder>/images)")
    q.add_argument("--heatmaps", help="folder with heatmap_benign/ and heatmap_malignant/ <stem>.hdf5")
    q.add_argument("--ext", default=".png", help="image file extension (default .png)")

    q = fmt.add_parser("cbis", help="CBIS-DDSM case-description CSVs + DICOM folder")
    q.add_argument("csvs", nargs="+", help="mass/calc_case_description_{train,test}_set.csv")
    q.add_argument("--images", required=True, help="the CBIS-DDSM DICOM root")
    q.add_argument("--no-bwc-benign", dest="bwc_benign", action="store_false",
                   help="do not count BENIGN_WITHOUT_CALLBACK as benign")
    q.add_argument("--random-split", action="store_true", help="ignore the train/test of the file names")

    q = fmt.add_parser("cmmd", help="CMMD clinical sheet + DICOM folder")
    q.add_argument("clinical", help="CMMD_clinicaldata_revision.xlsx (needs openpyxl) or a CSV export")
    q.add_argument("--images", required=True, help="the CMMD DICOM root folder")
    q.add_argument("--metadata", help="TCIA metadata.csv (Subject ID, File Location)")
    q.add_argument("--unlabelled-as-normal", action="store_true",
                   help="keep imaged breasts absent from the sheet as (0, 0) instead of dropping them")

    q = fmt.add_parser("vindr", help="VinDr-Mammo breast-level_annotations.csv + images/")
    q.add_argument("annotations", help="VinDr-Mammo breast-level_annotations.csv")
    q.add_argument("--images", required=True, help="folder of <study_id>/<image_id>.dicom")
    q.add_argument("--benign-birads", nargs="+", type=int, default=[2], help="BI-RADS categories counted as benign (default 2)")
    q.add_argument("--malignant-birads", nargs="+", type=int, default=[4, 5], help="BI-RADS categories counted as malignant (default 4 5)")
    q.add_argument("--random-split", action="store_true", help="ignore the official training/test split")
    q.add_argument("--findings", default=None,
                   help="VinDr-Mammo finding_annotations.csv, written as the annotation table (lesion boxes) "
                        "beside the exam table (default: the one beside the breast-level CSV, when present)")

    q = fmt.add_parser("rsna", help="RSNA screening mammography train.csv + train_images/")
    q.add_argument("train_csv", help="RSNA screening mammography train.csv")
    q.add_argument("--images", required=True, help="folder of <patient_id>/<image_id>.dcm")

    q = fmt.add_parser("embed", help="EMBED clinical + metadata tables")
    q.add_argument("clinical", help="EMBED clinical table (CSV)")
    q.add_argument("metadata", help="EMBED image metadata table (CSV)")
    q.add_argument("--images", required=True, help="root the anon_dicom_path values are found under")
    q.add_argument("--benign-severity", nargs="+", type=int, default=[4], help="EMBED path_severity codes counted as benign (default 4)")
    q.add_argument("--malignant-severity", nargs="+", type=int, default=[0, 1], help="EMBED path_severity codes counted as malignant (default 0 1)")
    q.add_argument("--include-cview", action="store_true", help="also use C-view (synthetic 2D) images")

    from mvmammo.data.sources.generic_csv import FIELDS_HELP, LAYOUTS

    q = fmt.add_parser("csv", help="any CSV with a column mapping (one row per image or per breast)",
                       description="Import any CSV: one row per image (patient_id, side, view, path) or one row\n"
                                   "per breast (patient_id, side, cc_path, mlo_path). Columns named like the fields\n"
                                   "need no --map. Writes the exam table and <name>_import_report.json.",
                       epilog=FIELDS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("csv", help="the source table (CSV or Parquet): one row per image or one row per breast")
    q.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN",
                   help="e.g. --map patient_id=PID --map side=Laterality --map view=View --map path=File")
    q.add_argument("--layout", choices=LAYOUTS, default="auto",
                   help="per image or per breast rows (default auto: from the column names)")
    q.add_argument("--root", help="folder relative paths start from (default: the CSV's folder)")

    for q in fmt.choices.values():
        _common(q)
        q.set_defaults(func=run)


def _dispatch(args, split):
    from mvmammo.data.sources import cbis, cmmd, embed, generic_csv, nyu, rsna, vindr

    f, one = args.format, {"split": split, "allow_missing_view": args.allow_missing_view}
    if f == "nyu":
        return nyu.import_nyu(args.exam_list, args.images, args.heatmaps, args.ext, **one)
    if f == "cbis":
        return cbis.import_cbis(args.csvs, args.images, bwc_benign=args.bwc_benign,
                                official_split=not args.random_split, **one)
    if f == "cmmd":
        return cmmd.import_cmmd(args.clinical, args.images, args.metadata, args.unlabelled_as_normal, **one)
    if f == "vindr":
        return vindr.import_vindr(args.annotations, args.images, args.benign_birads, args.malignant_birads,
                                  official_split=not args.random_split, findings=args.findings, **one)
    if f == "rsna":
        return rsna.import_rsna(args.train_csv, args.images, **one)
    if f == "embed":
        return embed.import_embed(args.clinical, args.metadata, args.images, args.benign_severity,
                                  args.malignant_severity, args.include_cview, **one)
    return generic_csv.import_csv(args.csv, generic_csv.parse_mapping(args.map), args.root, layout=args.layout,
                                  **one)


def _check_out(out: str) -> None:
    """Refuse a bad --out before any work (a long import must not end in an unwritable path).

    A wrong suffix is a usage error (exit 2); a path the file system cannot hold is an output error (exit 1),
    like every other command's unwritable output.
    """
    from mvmammo.errors import MvError, UsageError

    p = Path(out)
    if p.is_dir():
        raise MvError(f"--out {out}: is a folder; give a file name such as {p / 'exams.csv'}")
    if p.suffix.lower() not in TABLE_SUFFIXES:
        raise UsageError(f"--out {out}: the table must end in {', '.join(TABLE_SUFFIXES)}")
    parent = next((a for a in [p.parent, *p.parent.parents] if a.exists()), None)
    if parent is not None and not parent.is_dir():
        raise MvError(f"--out {out}: {parent} is a file, not a folder")


def run(args) -> int:
    from mvmammo.data.sources.common import SplitOptions, write_outputs

    _check_out(args.out)
    split = SplitOptions(tuple(args.split_fractions), args.seed, args.val_fraction)
    # Failures raise one-line errors (SourceError, CsvError, UnsafePickleError...); mvmammo.cli prints them.
    table, report = _dispatch(args, split)
    for line in report.lines():
        print(line)
    rp = write_outputs(table, report, args.out, allow_missing_view=args.allow_missing_view)
    print(f"wrote {args.out} ({len(table)} breasts) and {rp}")
    if report.annotations is not None:
        from mvmammo.data.annotations import annotation_path

        print(f"wrote {annotation_path(args.out)} ({len(report.annotations)} lesion outlines; "
              "`mvmammo patches extract` reads it)")
    return 0
