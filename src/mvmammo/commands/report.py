"""`mvmammo report RUN_OR_EXPERIMENT... --out report.html`: one self-contained HTML page of results."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("report", help="one self-contained HTML page (figures inline, opens from disk) of run, "
                                      "experiment or sweep folders")
    p.add_argument("paths", nargs="+", metavar="RUN_OR_EXPERIMENT",
                   help="run folders, experiment folders (a folder of <row>-s<seed> runs, e.g. runs/table1) "
                        "or sweep folders")
    p.add_argument("--out", required=True, help="the HTML file to write (replaced atomically), e.g. report.html")
    p.add_argument("--title", default=None, help="page title (default: mvmammo report: <folder names>)")
    p.add_argument("--split", default="test", help="the evaluated split the tables show (default test; a run "
                                                   "needs predictions_<split>.csv from `mvmammo evaluate`)")
    p.add_argument("--label", default="malignant", choices=["malignant", "benign"],
                   help="the label of the learning curves and utilisation figures")
    p.add_argument("--boot", type=int, default=1000, help="patient-bootstrap resamples for the ensemble CIs")
    p.set_defaults(func=run_report)


def run_report(args) -> int:
    from mvmammo.report.html import write_report

    out = write_report(args.paths, args.out, title=args.title, split=args.split, label=args.label,
                       n_boot=args.boot)
    print(f"report: {out}")
    return 0
