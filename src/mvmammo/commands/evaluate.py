"""`mvmammo evaluate RUN... [--table T]`, `mvmammo table RUN...`, `mvmammo compare RUN_A RUN_B`."""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="TTA predictions and AUCs with 95%% CIs for run folder(s)")
    p.add_argument("runs", nargs="+", help="trained run folder(s)")
    p.add_argument("--table", default=None,
                   help="evaluate on this labelled exam table instead of the run's own (external validation); "
                        "results go to predictions_/metrics_external-<table name>.csv/.json in the run folder")
    p.add_argument("--split", default=None,
                   help="split to evaluate: train, val, test or all (default: test; all with --table)")
    p.add_argument("--tta", type=int, default=None, help="random windows per breast (0 = centre window)")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="which checkpoint: best (validation AUC) or last")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the run's run.device)")
    from mvmammo.commands.predict import heatmap_options

    heatmap_options(p)
    p.set_defaults(func=run_evaluate)
    t = sub.add_parser("table", help="paper-style table over run folders (rows grouped by NAME-sSEED)")
    t.add_argument("runs", nargs="+", help="evaluated run folders or experiment folders; rows are grouped by NAME-sSEED")
    t.add_argument("--split", default="test", help="test, val, or a result name such as external-<table name>")
    t.add_argument("--label", default="malignant", choices=["malignant", "benign"], help="which label's AUC the table shows (default malignant)")
    t.add_argument("--oracle", default=None, help="oracle.json of a synthetic cohort: adds the gap to oracle")
    t.add_argument("--csv", default=None, help="also write the table as CSV here")
    t.set_defaults(func=run_table)
    c = sub.add_parser("compare", help="paired DeLong test between two evaluated runs")
    c.add_argument("run_a", help="first evaluated run folder")
    c.add_argument("run_b", help="second evaluated run folder (same breasts)")
    c.add_argument("--split", default="test", help="evaluated split to compare, e.g. test or external-NAME (default test)")
    c.add_argument("--label", default="malignant", choices=["malignant", "benign"], help="which label's AUCs to compare (default malignant)")
    c.set_defaults(func=run_compare)


def run_evaluate(args) -> int:
    from mvmammo.evaluation.evaluate import evaluate_run

    from mvmammo.errors import UsageError

    if args.tta is not None and args.tta < 0:
        raise UsageError(f"--tta {args.tta}: give 0 (centre window) or a positive number of windows")
    split = args.split or ("all" if args.table else "test")
    if args.patch_model and not args.table:
        raise UsageError("--patch-model makes heatmaps for an external --table; a run's own table has its heatmaps")
    from mvmammo.commands.predict import heatmap_maker

    heat = heatmap_maker(args, progress=True)
    for r in args.runs:
        res = evaluate_run(r, split=split, tta=args.tta, checkpoint=args.checkpoint, device=args.device,
                           table=args.table, heatmaps=heat)
        if res.get("dropped_in_preprocessing"):
            print(f"{r}: {res['dropped_in_preprocessing']} breast(s) of {args.table} could not be preprocessed and "
                  "are not in the metrics", file=sys.stderr)
        for label in ("malignant", "benign"):
            m = res[label]
            print(f"{r} [{res['name']}, tta {res['tta']}] {label}: AUC {m['auc']:.3f} "
                  f"DeLong 95% CI [{m['delong_lo']:.3f}, {m['delong_hi']:.3f}] "
                  f"bootstrap [{m['boot_lo']:.3f}, {m['boot_hi']:.3f}] "
                  f"(n+ {m['n_pos']}, n- {m['n_neg']})")
    return 0


def run_table(args) -> int:
    from mvmammo.evaluation.tables import format_table, load_oracle_file, table

    df = table(args.runs, split=args.split)
    print(format_table(df, load_oracle_file(args.oracle), args.label))
    if args.csv:
        df.to_csv(args.csv, index=False)
    return 0


def run_compare(args) -> int:
    from mvmammo.evaluation.evaluate import paired_test

    r = paired_test(args.run_a, args.run_b, args.split, args.label)
    print(f"{args.label} AUC {r.auc_a:.3f} vs {r.auc_b:.3f}: difference {r.diff:+.3f}, "
          f"z = {r.z:.2f}, p = {r.p_value:.4f} (paired DeLong)")
    return 0
