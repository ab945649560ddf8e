"""`mvmammo train [--preset NAME] section.field=value ...`: train or resume one run."""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("train", help="train one run (resumes from last.pt if the run folder has one)")
    p.add_argument("overrides", nargs="*", help="config overrides such as optim.lr=1e-4 model.family=joint")
    p.add_argument("--preset", default="default", help="named preset(s), comma-separated (see `mvmammo config`)")
    p.set_defaults(func=run)
    c = sub.add_parser("config", help="print the resolved config of a preset + overrides")
    c.add_argument("overrides", nargs="*", help="config overrides section.field=value, e.g. optim.lr=1e-4")
    c.add_argument("--preset", default="default", help="named preset(s), comma-separated (default: the defaults)")
    c.set_defaults(func=show)


def _resolve(args):
    from mvmammo.config import ConfigError, resolve

    try:
        return resolve(args.preset, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def run(args) -> int:
    cfg = _resolve(args)
    if cfg is None:
        return 2
    from mvmammo.training.checks import check
    from mvmammo.training.loop import train

    check(cfg)  # exit 2 naming every bad key, before a run folder exists
    from mvmammo.analysis.hooks import hooks_for
    from mvmammo.experiments.blend_estimate import ensure_weights

    hooks = hooks_for(cfg)  # run.tensorboard: fails here, before training, when tensorboard is missing
    ensure_weights(cfg)  # reg.blend=offline with a weights file still to estimate
    run_dir = train(cfg, hooks=hooks)  # failures reach mvmammo.cli as one `error:` line
    print(f"run folder: {run_dir}")
    return 0


def show(args) -> int:
    import json

    from mvmammo.config import PRESETS, to_dict

    cfg = _resolve(args)
    if cfg is None:
        return 2
    print(json.dumps(to_dict(cfg), indent=2))
    print(f"presets: {', '.join(sorted(PRESETS))}", file=sys.stderr)
    return 0
