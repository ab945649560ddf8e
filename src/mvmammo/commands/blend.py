"""`mvmammo blend-estimate --out DIR [--preset P] overrides...`: gradient blending's offline weight estimate
(reg.blend_estimate=holdout: V held out of train; validation: the paper's Appendix C, V = validation split);
`mvmammo blend-table PATH...`: the blending weights as in the paper's Table 4 (mean +- std over seeds)."""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("blend-estimate", help="estimate gradient-blending weights (three runs on train minus V)")
    p.add_argument("--out", required=True, help="estimate folder: cc/, mlo/, joint/ runs and blend_weights.json")
    p.add_argument("--preset", default="default", help="named preset(s), comma-separated")
    p.add_argument("overrides", nargs="*", help="the blended run's config overrides (model.family, optim.*, "
                                                "reg.blend_epochs, reg.blend_metric, reg.blend_estimate="
                                                "holdout|validation, reg.blend_holdout, ...)")
    p.set_defaults(func=run_estimate)
    t = sub.add_parser("blend-table", help="blending weights of estimate folders or blended runs (Table 4)")
    t.add_argument("paths", nargs="+", help="blend_weights.json files, estimate folders or blended run folders")
    t.set_defaults(func=run_table)


def run_estimate(args) -> int:
    from dataclasses import replace
    from pathlib import Path

    from mvmammo.config import ConfigError, resolve
    from mvmammo.experiments.blend_estimate import estimate

    try:
        cfg = resolve(args.preset, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if not cfg.data.cache_dir:  # keep the cohort and window cache next to the estimate, not in runs/
        cfg = replace(cfg, data=replace(cfg.data, cache_dir=str(out.resolve().parent / "_cache")))
    try:
        estimate(cfg, out)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"weights: {out / 'blend_weights.json'} (train with reg.blend=offline "
          f"reg.blend_weights_file={out / 'blend_weights.json'} model.aux_heads=true)")
    return 0


def run_table(args) -> int:
    from mvmammo.experiments.blend_estimate import weights_table

    try:
        print(weights_table(args.paths))
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
