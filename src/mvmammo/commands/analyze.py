"""`mvmammo analyze utilization RUN... [--split test]`: view-utilisation metrics of trained runs."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("analyze", help="analyses of trained run folders (view utilisation)")
    asub = p.add_subparsers(dest="analysis", metavar="ANALYSIS")
    u = asub.add_parser("utilization", help="AUC with each view ablated, conditional utilisation, Shapley "
                                            "contributions, per-view linear probes; writes utilization.json")
    u.add_argument("runs", nargs="+", metavar="RUN", help="trained run folder(s)")
    u.add_argument("--split", default="test", help="split of the run's exam table to measure on (default test)")
    u.add_argument("--checkpoint", default="best", choices=["best", "last"], help="which checkpoint of each run: best (validation AUC) or last")
    u.add_argument("--label", default="malignant", choices=["malignant", "benign"], help="label of the table")
    u.add_argument("--permutations", type=int, default=5, help="permutations averaged for the permute ablation")
    u.add_argument("--no-probes", action="store_true", help="skip the linear probes (the slowest part)")
    u.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the run's run.device)")
    u.set_defaults(func=run_utilization)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_utilization(args) -> int:
    from mvmammo.analysis.utilization import analyze_run
    from mvmammo.report.utilization import format_table

    results = []
    for r in args.runs:
        results.append(analyze_run(r, split=args.split, checkpoint=args.checkpoint, device=args.device,
                                   n_perm=args.permutations, probes=not args.no_probes))
    for mode in ("mean", "zero", "permute"):
        print(format_table(results, args.label, mode) + "\n")
    return 0
