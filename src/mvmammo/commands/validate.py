"""`mvmammo validate TABLE`: check an exam table against the contract."""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("validate", help="check an exam table (CSV/Parquet); one line per problem")
    p.add_argument("table")
    p.add_argument("--no-files", action="store_true", help="do not check that image files exist")
    p.set_defaults(func=run)


def run(args) -> int:
    from mvmammo.data import exams

    try:
        df = exams.read_table(args.table)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    problems = exams.validate(df, check_files=not args.no_files)
    if problems:
        for line in problems:
            print(f"{args.table}: {line}")
        print(f"{len(problems)} problem(s); the table is not valid", file=sys.stderr)
        return 1
    for line in exams.summarize(exams.load_valid(args.table, check_files=False)).lines():
        print(line)
    print("valid")
    return 0
