"""Gradient blending's offline estimate (Wang et al. 2019; methods.md section 1; docs/regularizers.md): three
models (uni-view CC, uni-view MLO and the run's own two-view family, the "joint" role) trained with the plain loss
on T, their per-epoch curves on T and V, and the weights computed from them (training/methods/blend.py holds
the arithmetic). This trains other models, so it is an experiment step that runs before the blended run (the
train command, the experiment runner and the sweep worker call :func:`ensure_weights`), not a loop hook.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from mvmammo.atomic import write_text
from mvmammo.config import Config, RegularizerConfig
from mvmammo.training.methods.blend import ESTIMATES, ROLES, estimate_terms

def curves_from_run(run_dir: str | Path, estimate: str = "holdout") -> dict[str, list[float]]:
    """{loss_T, loss_V, auc_T, auc_V}: lists indexed by epochs trained (0 = before training).

    estimate "holdout": V = holdout_*, T = train_eval_* (on T'); "validation": V = val_*, T = train_eval_*
    (on the whole training split; :class:`ValidationCurves` logs them).
    """
    path = Path(run_dir) / "metrics.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    epochs = {d["epoch"]: d for d in lines if d.get("kind") == "epoch"}  # last line of an epoch wins
    v = "holdout" if estimate == "holdout" else "val"
    if not epochs or f"init_{v}_loss" not in epochs.get(0, {}) or "train_eval_loss" not in epochs[min(epochs)]:
        how = "data.holdout_fraction > 0" if estimate == "holdout" else "the ValidationCurves hook"
        raise ValueError(f"{path}: no {estimate} curves (train with {how}, from epoch 0)")
    first = epochs[0]
    out = {"loss_T": [first["init_train_eval_loss"]], "loss_V": [first[f"init_{v}_loss"]],
           "auc_T": [first["init_train_eval_auc_malignant"]], "auc_V": [first[f"init_{v}_auc_malignant"]]}
    for e in sorted(epochs):
        d = epochs[e]
        out["loss_T"].append(d["train_eval_loss"])
        out["loss_V"].append(d[f"{v}_loss"])
        out["auc_T"].append(d["train_eval_auc_malignant"])
        out["auc_V"].append(d[f"{v}_auc_malignant"])
    return out


class ValidationCurves:
    """Loop hook for reg.blend_estimate=validation: loss and AUCs on the whole training split in eval mode
    (``train_eval_*``) after every epoch, and before training (``init_train_eval_*``, ``init_val_*``) in
    the first epoch's line; the loop itself logs ``val_*`` (same evaluation path: centre window, eval
    mode, the training loss definition), so L_V and L_T are on the same scale."""

    def __init__(self):
        self.init: dict = {}

    @staticmethod
    def _measure(ctx, rows) -> dict:
        from mvmammo.training.validation import evaluate_rows

        r = evaluate_rows(ctx.model, ctx.maker, rows, ctx.cfg)
        return {"loss": r["loss"], "auc_malignant": r["auc_malignant"], "auc_benign": r["auc_benign"]}

    def on_train_start(self, ctx) -> dict:
        self.init = {}
        if ctx.epoch == 0:  # a fresh run (a resumed one logged its epoch-0 line already)
            for prefix, rows in (("train_eval", ctx.train_rows), ("val", ctx.val_rows)):
                self.init.update({f"init_{prefix}_{k}": v for k, v in self._measure(ctx, rows).items()})
        return {}

    def on_epoch_end(self, ctx) -> dict:
        out = {f"train_eval_{k}": v for k, v in self._measure(ctx, ctx.train_rows).items()}
        if ctx.epoch == 0:
            out.update(self.init)
        return out


def estimate_configs(cfg: Config, folder: str | Path) -> dict[str, Config]:
    """The three estimate runs of a (blended) run's config: same data, optimizer and seed; plain loss."""
    from mvmammo.training.inputs import cache_root

    if cfg.model.family.startswith("uni_"):
        raise ValueError(f"gradient blending needs a two-view model family, not {cfg.model.family!r}")
    if cfg.reg.blend_estimate not in ESTIMATES:
        raise ValueError(f"reg.blend_estimate={cfg.reg.blend_estimate!r}; use {' or '.join(ESTIMATES)}")
    folder = Path(folder)
    # No regularizer in the estimate runs, and the same config whichever blended row asks first (a row
    # with window (N, M) and one with (0, M) share one estimate).
    validation = cfg.reg.blend_estimate == "validation"
    reg = RegularizerConfig(blend_holdout=0.0 if validation else cfg.reg.blend_holdout,
                            blend_epochs=(0, int(cfg.reg.blend_epochs[1])), blend_estimate=cfg.reg.blend_estimate)
    holdout = 0.0 if validation else cfg.reg.blend_holdout  # validation: train on the whole training split
    data = replace(cfg.data, holdout_fraction=holdout, cache_dir=str(cache_root(cfg)))
    optim = replace(cfg.optim, epochs=int(cfg.reg.blend_epochs[1]))
    out = {}
    for role, family in (("cc", "uni_cc"), ("mlo", "uni_mlo"), ("joint", cfg.model.family)):
        out[role] = replace(cfg, data=data, optim=optim, reg=reg,
                            model=replace(cfg.model, family=family, aux_heads=False),
                            run=replace(cfg.run, out=str(folder / role), lca=False))
    return out


def estimate(cfg: Config, folder: str | Path, filename: str = "blend_weights.json") -> dict:
    """Train (or resume) the three estimate runs into ``folder``; write and return folder/filename."""
    from mvmammo.training.loop import train

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfgs = estimate_configs(cfg, folder)
    kind = cfg.reg.blend_estimate
    for role, c in cfgs.items():
        if not (Path(c.run.out) / "DONE").exists():
            on = "T'" if kind == "holdout" else "the training split (V = validation)"
            print(f"blend estimate: training the {role} model ({c.model.family}) on {on} for "
                  f"{c.optim.epochs} epochs into {c.run.out}", flush=True)
            train(c, hooks=[ValidationCurves()] if kind == "validation" else [])
    curves = {role: curves_from_run(c.run.out, kind) for role, c in cfgs.items()}
    reg = cfg.reg
    last = int(reg.blend_epochs[1])
    windows = sorted({tuple(int(x) for x in reg.blend_epochs), (0, last), (max(last - 2, 0), last)})
    estimates = [{"metric": mt, "window": list(w), "terms": _safe_terms(curves, mt, w, kind)}
                 for mt in ("loss", "auc") for w in windows if w[0] < w[1]]
    result = {
        "estimate": kind, "metric": reg.blend_metric, "window": list(reg.blend_epochs),
        "weights": _weights_or_none(_safe_terms(curves, reg.blend_metric, reg.blend_epochs, kind)),
        "estimates": estimates,
        "holdout": {"fraction": reg.blend_holdout if kind == "holdout" else 0.0, "seed": cfg.data.holdout_seed,
                    "seed_of_runs": cfg.run.seed},
        "runs": {role: c.run.out for role, c in cfgs.items()},
        "curves": curves,
    }
    write_text(folder / filename, json.dumps(result, indent=2) + "\n")
    print(format_estimates(result))
    return result


def _safe_terms(curves, metric, window, estimate="holdout"):
    try:
        return estimate_terms(curves, metric, window, estimate)
    except ValueError as exc:  # e.g. AUC undefined on a small V: report, do not fail the loss estimate
        return {"error": str(exc)}


def _weights_or_none(terms: dict) -> dict | None:
    return None if "error" in terms else {r: t["weight"] for r, t in terms.items()}


def format_estimates(result: dict) -> str:
    """Table 4 style: one line per (metric, window) with the weights (joint, cc, mlo, as the paper)."""
    how = ("weights averaged over the window's epochs, V = validation split"
           if result.get("estimate") == "validation" else "window end points, V held out of train")
    lines = [f"gradient blending estimate ({how})",
             f"{'metric':<7} {'window':<10} {'w_joint':>8} {'w_cc':>8} {'w_mlo':>8}   dG (joint, cc, mlo)"]
    for e in result["estimates"]:
        t = e["terms"]
        win = f"[{e['window'][0]}, {e['window'][1]}]"
        if "error" in t:
            lines.append(f"{e['metric']:<7} {win:<10} {t['error']}")
            continue
        lines.append(f"{e['metric']:<7} {win:<10} {t['joint']['weight']:>8.3f} {t['cc']['weight']:>8.3f} "
                     f"{t['mlo']['weight']:>8.3f}   " + ", ".join(f"{t[r]['dG']:+.4f}" for r in ("joint", "cc", "mlo")))
    w = result["weights"]
    if w is None:
        lines.append(f"no weights for {result['metric']} over {result['window']} (see above)")
        return "\n".join(lines)
    lines.append(f"used ({result['metric']}, window {result['window']}): w_cc {w['cc']:.3f}, w_mlo {w['mlo']:.3f}, "
                 f"w_joint {w['joint']:.3f}")
    return "\n".join(lines)




def ensure_weights(cfg: Config) -> None:
    """reg.blend=offline with a reg.blend_weights_file that does not exist yet: estimate it next to where it
    should be (three short runs), so the blended run finds it."""
    if cfg.reg.blend != "offline" or not cfg.reg.blend_weights_file:
        return
    path = Path(cfg.reg.blend_weights_file)
    if not path.exists():
        print(f"{path} is missing: estimating the blending weights first", flush=True)
        estimate(cfg, path.parent, path.name)


def weights_table(paths: list[str | Path]) -> str:
    """The paper's Table 4 layout (w_joint, w_cc, w_mlo), mean +- std over the given seeds.

    A path is an estimate's blend_weights.json (or its folder): one line per (metric, window) it holds;
    or a blended run folder: one line per row (runs grouped by <row>-s<seed>) with the weights it used.
    """
    import numpy as np

    from mvmammo.report.runs import row_name

    groups: dict[str, list[tuple[float, float, float]]] = {}
    files = [Path(p) / "blend_weights.json" if Path(p).is_dir() else Path(p) for p in paths]
    for f in dict.fromkeys(x.resolve() for x in files):  # a path named twice (overlapping globs) counts once
        data = json.loads(f.read_text())
        if "estimates" in data:
            for e in data["estimates"]:
                if "error" not in e["terms"]:
                    key = f"estimate {e['metric']} [{e['window'][0]}, {e['window'][1]}]"
                    groups.setdefault(key, []).append(tuple(e["terms"][r]["weight"] for r in ("joint", "cc", "mlo")))
        else:
            w = data["weights"]
            what = "fixed" if data["blend"] == "fixed" else f"{data['metric']} {data['window']}"
            key = f"{row_name(f.parent)} ({what}{', swapped' if data.get('swapped') else ''})"
            groups.setdefault(key, []).append((w["joint"], w["cc"], w["mlo"]))
    lines = [f"{'weights of':<44} {'n':>2}  {'w_joint':>13}  {'w_cc':>13}  {'w_mlo':>13}"]
    for key, ws in groups.items():
        a = np.asarray(ws)
        sd = a.std(0, ddof=1) if len(a) > 1 else np.zeros(3)
        lines.append(f"{key:<44} {len(a):>2}  " + "  ".join(f"{m:.3f} +- {s:.3f}" for m, s in zip(a.mean(0), sd)))
    return "\n".join(lines)
