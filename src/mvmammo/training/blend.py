"""Gradient blending (Wang et al. 2019; methods.md section 1): the weights of
L = w_cc L(aux_logits_cc) + w_mlo L(aux_logits_mlo) + w_joint L(logits).

Offline estimate: three models (uni-view CC, uni-view MLO and the run's own two-view family, i.e. the
"joint" role) are trained with the plain loss; their per-epoch curves (loss and malignant AUC on a
training set T and a held-out set V, index = epochs trained, 0 = before training) give the weights.
reg.blend_estimate chooses T, V and the formula:
  - "holdout" (Wang et al.; public code): V = reg.blend_holdout of the training patients
    (data.holdout_fraction; training/holdout.py), the models train on T = train \\ V; over the window
    (N, M) = reg.blend_epochs
        dG = L_V[N] - L_V[M]                                  generalisation gain
        dO = (L_V[M] - L_T[M]) - (L_V[N] - L_T[N])            growth of the overfitting gap
        w  = max(dG, 0) / max(dO^2, floor),  normalised to sum 1;
  - "validation" (the paper's Appendix C): the models train on the whole training split, V is the
    validation split and T the training split (both measured in eval mode on the centre window after
    every epoch); the weights of every one-epoch window (e - 1, e), N < e <= M, are computed as above
    and averaged over the window ("average weights ... over a window of epochs").
With reg.blend_metric=auc the loss-like quantity is 1 - AUC (malignant, the primary label).
:func:`blend_weights` is that arithmetic, a pure function of the curves.

The estimate folder holds the three runs (cc/, mlo/, joint/) and blend_weights.json (the curves, the
weights for the configured metric and window, and a few alternatives). A blended run with
reg.blend=offline reads reg.blend_weights_file and recomputes the weights from the stored curves for
its own blend_metric and blend_epochs, so one estimate serves every row of the paper's Table 4. A missing
file is estimated on first use (under torchrun, run `mvmammo blend-estimate` first instead).
"""
from __future__ import annotations

import json
import math
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

from mvmammo.atomic import write_text
from mvmammo.config import Config, RegularizerConfig

ROLES = ("cc", "mlo", "joint")
ESTIMATES = ("holdout", "validation")
MIN_DO2 = 1e-8  # floor on dO^2 (tsai's choice): a head that does not overfit at all gets ~all the weight


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
        from mvmammo.training.loop import evaluate_rows  # lazy: the loop imports this module's users

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


def blend_terms(curves: dict, metric: str = "loss", window: tuple[int, int] = (0, 5),
                min_do2: float = MIN_DO2) -> dict[str, dict[str, float]]:
    """Per role: dG, dO, the unnormalised weight w and the normalised weight."""
    if metric not in ("loss", "auc"):
        raise ValueError(f"reg.blend_metric={metric!r}; use loss or auc")
    n, m = int(window[0]), int(window[1])
    if not 0 <= n < m:
        raise ValueError(f"reg.blend_epochs={window}: need 0 <= N < N + n")
    terms = {}
    for role in ROLES:
        c = curves[role]
        if metric == "loss":
            lt, lv = c["loss_T"], c["loss_V"]
        else:  # AUC grows as the model improves: 1 - AUC behaves like a loss
            lt, lv = [1 - a for a in c["auc_T"]], [1 - a for a in c["auc_V"]]
        if len(lv) <= m:
            raise ValueError(f"the {role} curve covers epochs 0..{len(lv) - 1}; the window {window} needs {m} "
                             "(train the estimate for more epochs: reg.blend_epochs)")
        vals = (lt[n], lt[m], lv[n], lv[m])
        if not all(math.isfinite(v) for v in vals):
            raise ValueError(f"the {role} {metric} curve is undefined in the window {window} (e.g. V without "
                             "positives for AUC); use reg.blend_metric=loss or a larger reg.blend_holdout")
        dg = lv[n] - lv[m]
        do = (lv[m] - lt[m]) - (lv[n] - lt[n])
        terms[role] = {"dG": dg, "dO": do, "w": max(dg, 0.0) / max(do * do, min_do2)}
    total = sum(t["w"] for t in terms.values())
    for t in terms.values():
        # No head generalised in the window (every dG <= 0): nothing to prefer, so equal weights.
        t["weight"] = t["w"] / total if total > 0 else 1.0 / len(ROLES)
    return terms


def averaged_terms(curves: dict, metric: str = "loss", window: tuple[int, int] = (0, 5),
                   min_do2: float = MIN_DO2) -> dict[str, dict[str, float]]:
    """reg.blend_estimate=validation: per role, the weights of the one-epoch windows (e - 1, e),
    N < e <= M, averaged (``weight``; they still sum to 1 over the roles), next to dG and dO of the whole
    window (for the table) and the number of windows averaged."""
    n, m = int(window[0]), int(window[1])
    whole = blend_terms(curves, metric, (n, m), min_do2)  # checks the window and the curves' length
    per_epoch = [blend_terms(curves, metric, (e - 1, e), min_do2) for e in range(n + 1, m + 1)]
    return {r: {"dG": whole[r]["dG"], "dO": whole[r]["dO"], "epochs": len(per_epoch),
                "weight": sum(t[r]["weight"] for t in per_epoch) / len(per_epoch)} for r in ROLES}


def estimate_terms(curves: dict, metric: str = "loss", window: tuple[int, int] = (0, 5),
                   estimate: str = "holdout", min_do2: float = MIN_DO2) -> dict[str, dict[str, float]]:
    """The terms of reg.blend_estimate: end points of the window (holdout) or per-epoch averages
    (validation)."""
    if estimate not in ESTIMATES:
        raise ValueError(f"reg.blend_estimate={estimate!r}; use {' or '.join(ESTIMATES)}")
    fn = blend_terms if estimate == "holdout" else averaged_terms
    return fn(curves, metric, window, min_do2)


def blend_weights(curves: dict, metric: str = "loss", window: tuple[int, int] = (0, 5),
                  min_do2: float = MIN_DO2, estimate: str = "holdout") -> dict[str, float]:
    """{cc, mlo, joint} weights, >= 0, summing to 1, from the curves of the three estimate models."""
    return {r: t["weight"] for r, t in estimate_terms(curves, metric, window, estimate, min_do2).items()}


def swap_views(w: dict[str, float]) -> dict[str, float]:
    return {"cc": w["mlo"], "mlo": w["cc"], "joint": w["joint"]}


# --- the estimate: three runs on T' ---

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


# --- the blended run ---

def _read_weights(reg: RegularizerConfig) -> dict[str, float]:
    if reg.blend == "fixed":
        w = dict(zip(ROLES, (float(x) for x in reg.blend_weights)))
    elif reg.blend == "offline":
        path = Path(reg.blend_weights_file)
        data = json.loads(path.read_text())
        if "curves" in data:
            made = data.get("estimate", "holdout")
            if made != reg.blend_estimate:
                raise ValueError(f"{path}: estimated with reg.blend_estimate={made}, but this run asks for "
                                 f"{reg.blend_estimate}; set reg.blend_estimate={made} or estimate into another "
                                 "folder")
            w = blend_weights(data["curves"], reg.blend_metric, reg.blend_epochs, estimate=made)
        else:
            w = data.get("weights", data)
            w = {r: float(w[r]) for r in ROLES}
    else:
        raise ValueError(f"reg.blend={reg.blend!r}; use none, fixed or offline")
    if any(v < 0 or not math.isfinite(v) for v in w.values()) or sum(w.values()) <= 0:
        raise ValueError(f"blending weights must be >= 0 with a positive sum, got {w}")
    total = sum(w.values())
    w = {r: v / total for r, v in w.items()}  # normalised to sum 1, so (1, 1, 1) means equal weights
    return swap_views(w) if reg.blend_swap_views else w


@lru_cache(maxsize=32)
def _cached_weights(reg: RegularizerConfig, stamp: float) -> tuple[float, float, float]:
    w = _read_weights(reg)
    return w["cc"], w["mlo"], w["joint"]


def weights_for(reg: RegularizerConfig) -> tuple[float, float, float]:
    """(w_cc, w_mlo, w_joint) of a config; read once per file version (the task calls it every step)."""
    stamp = 0.0
    if reg.blend == "offline":
        path = Path(reg.blend_weights_file)
        if not path.is_file():
            raise FileNotFoundError(f"reg.blend_weights_file={reg.blend_weights_file!r} does not exist")
        stamp = path.stat().st_mtime_ns
    return _cached_weights(reg, stamp)


def prepare_blend(model, cfg: Config) -> dict[str, float]:
    """Check the model has the auxiliary heads, resolve (estimating if needed) and record the weights."""
    if not getattr(model, "aux_heads", False) or not all(hasattr(model, f"aux_{v}") for v in ("cc", "mlo")):
        raise ValueError(f"reg.blend={cfg.reg.blend} needs per-view heads on a two-view model: set "
                         f"model.aux_heads=true (family {cfg.model.family!r})")
    if cfg.reg.blend == "offline":
        if not cfg.reg.blend_weights_file:
            raise ValueError("reg.blend=offline needs reg.blend_weights_file (the blend_weights.json of "
                             "`mvmammo blend-estimate`, or where one should be estimated)")
        path = Path(cfg.reg.blend_weights_file)
        if not path.exists():
            print(f"{path} is missing: estimating the blending weights first", flush=True)
            estimate(cfg, path.parent, path.name)
    w = dict(zip(ROLES, weights_for(cfg.reg)))
    record = {"blend": cfg.reg.blend, "source": cfg.reg.blend_weights_file or "reg.blend_weights",
              "estimate": cfg.reg.blend_estimate, "metric": cfg.reg.blend_metric,
              "window": list(cfg.reg.blend_epochs),
              "swapped": cfg.reg.blend_swap_views, "weights": w}
    run_dir = Path(cfg.run.out)
    if run_dir.is_dir():
        write_text(run_dir / "blend_weights.json", json.dumps(record, indent=2) + "\n")
    if cfg.run.progress:
        print(f"gradient blending weights: w_cc {w['cc']:.3f}, w_mlo {w['mlo']:.3f}, w_joint {w['joint']:.3f}")
    return w


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
