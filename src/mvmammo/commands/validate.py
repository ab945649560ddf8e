"""`mvmammo validate TABLE`: check an exam table against the contract (exit 0 valid, 1 not)."""
from __future__ import annotations

import sys

WARNING_EXAMPLES = 3  # warning lines shown per kind (all are counted)


def register(sub) -> None:
    p = sub.add_parser("validate", help="check an exam table (CSV/Parquet); one line per problem",
                       description="Check an exam table against the contract (see docs/data.md). Problems are "
                                   "printed one per line naming the row and column (the first --max-lines of "
                                   "each kind; all are counted); exit 0 when valid, 1 when not.")
    p.add_argument("table", help="exam table to check (CSV or Parquet)")
    p.add_argument("--no-files", action="store_true", help="do not check that image files exist")
    p.add_argument("--no-labels", action="store_true",
                   help="a table to predict on: benign/malignant may be absent or empty (unknown)")
    p.add_argument("--no-split", action="store_true", help="the split column may be absent (read as 'all')")
    p.add_argument("--allow-missing-view", action="store_true",
                   help="a breast may have only one of cc_path / mlo_path (not neither)")
    p.add_argument("--strict-paths", action="store_true",
                   help="image paths outside the table's folder (absolute, or .. above it) are errors, "
                        "not warnings")
    p.add_argument("--max-lines", type=int, default=50, metavar="N",
                   help="problems printed per kind (default 50; all are counted)")
    p.set_defaults(func=run)


def run(args) -> int:
    from mvmammo.data import exams
    from mvmammo.data.table_checks import capped, check, counts
    from mvmammo.errors import UsageError

    if args.max_lines < 0:
        raise UsageError(f"--max-lines {args.max_lines}: must be >= 0")
    df = exams.read_table(args.table)  # missing, empty, not UTF-8, unknown format: one error line
    opts = dict(allow_missing_view=args.allow_missing_view, require_labels=not args.no_labels,
                require_split=not args.no_split)
    found = check(df, check_files=not args.no_files, strict_paths=args.strict_paths, **opts)
    # Importers write absolute paths on purpose, so these are summarised: a few examples and the counts.
    for line in capped(found.warnings, min(args.max_lines, WARNING_EXAMPLES)):
        print(f"warning: {args.table}: {line}", file=sys.stderr)
    if found.warnings:
        kinds = ", ".join(f"{k} {n}" for k, n in counts(found.warnings).items())
        print(f"warning: {args.table}: {len(found.warnings)} image path(s) outside the table's folder ({kinds}): "
              "the table cannot be moved with its images (--strict-paths makes this an error)", file=sys.stderr)
    if found.errors:
        for line in capped(found.errors, args.max_lines):
            print(f"{args.table}: {line}")
        kinds = ", ".join(f"{k} {n}" for k, n in counts(found.errors).items())
        raise exams.TableError([f"{args.table}: {len(found.errors)} problem(s) ({kinds}); the table is not valid"])
    for line in exams.summarize(df).lines():  # df passed every check: no second read
        print(line)
    print("valid")
    return 0
