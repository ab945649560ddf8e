"""`mvmammo plot RUN... --out DIR`: the figures that the given run folders have data for."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("plot", help="figures from run folders: learning curves, gradient norms, LCA, "
                                    "view utilisation")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s) to draw")
    p.add_argument("--out", required=True, help="folder for the PNG files")
    p.add_argument("--label", default="malignant", choices=["malignant", "benign"], help="which label's AUC curves (default malignant)")
    p.set_defaults(func=run_plot)


def run_plot(args) -> int:
    from pathlib import Path

    from mvmammo.errors import MvError
    from mvmammo.report.figures import all_figures

    for r in args.runs:
        if not (Path(r) / "config.json").is_file():
            raise MvError(f"{r}: not a run folder (no config.json); give folders written by `mvmammo train`")
    made = all_figures(args.runs, Path(args.out), label=args.label)
    for name, path in made.items():
        print(f"{name}: {path if path else '(no data in these runs)'}")
    return 0
