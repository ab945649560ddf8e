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

The estimate itself (three runs) is an experiment step: experiments/blend_estimate.py. The estimate folder holds
the three runs (cc/, mlo/, joint/) and blend_weights.json (the curves, the
weights for the configured metric and window, and a few alternatives). A blended run with
reg.blend=offline reads reg.blend_weights_file and recomputes the weights from the stored curves for
its own blend_metric and blend_epochs, so one estimate serves every row of the paper's Table 4. A missing
file is estimated before the run by the command that starts it (`mvmammo train`, experiments, sweeps; under
torchrun, run `mvmammo blend-estimate` first instead).
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

from mvmammo.atomic import write_text
from mvmammo.config import Config, RegularizerConfig
from mvmammo.training.methods.base import Method, register_method
from mvmammo.training.tasks import bce_pair, register_task, targets

ROLES = ("cc", "mlo", "joint")
ESTIMATES = ("holdout", "validation")
MIN_DO2 = 1e-8  # floor on dO^2 (tsai's choice): a head that does not overfit at all gets ~all the weight


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
            raise FileNotFoundError(f"reg.blend_weights_file={path}: no such file; run `mvmammo blend-estimate` "
                                    "with this config first (`mvmammo train` does it for you)")
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


@register_task("blend")
def blend_loss(out: dict, batch: dict, cfg=None) -> dict:
    """L = w_cc L(aux_logits_cc) + w_mlo L(aux_logits_mlo) + w_joint L(logits).

    Each L is the task's loss (benign + malignant mean BCE, honouring the sample weight of modality dropout's
    "exclude" rule); the weights are :func:`weights_for`'s, normalised to sum 1. ``loss_benign`` and
    ``loss_malignant`` are the joint head's, so they mean the same as in the standard task.
    """
    missing = [k for k in ("aux_logits_cc", "aux_logits_mlo") if k not in out]
    if missing:
        raise ValueError(f"reg.blend needs the per-view heads' outputs {missing}: set model.aux_heads=true on a "
                         "two-view model family")
    w_cc, w_mlo, w_joint = weights_for(cfg.reg)
    y, weight = targets(batch), out.get("sample_weight")
    joint = bce_pair(out["logits"], y, weight)
    cc = bce_pair(out["aux_logits_cc"], y, weight)["loss"]
    mlo = bce_pair(out["aux_logits_mlo"], y, weight)["loss"]
    total = w_cc * cc + w_mlo * mlo + w_joint * joint["loss"]
    return {"loss": total, "loss_benign": joint["loss_benign"], "loss_malignant": joint["loss_malignant"],
            "loss_joint": joint["loss"], "loss_cc": cc, "loss_mlo": mlo}


@register_method("blend")
class Blend(Method):
    """The blended loss with weights from reg.blend_weights (fixed) or an estimate's file (offline)."""

    @classmethod
    def active(cls, cfg: Config) -> bool:
        return cfg.reg.blend != "none"

    def prepare_model(self, model) -> None:
        prepare_blend(model, self.cfg)

    def loss(self, out: dict, batch: dict, ctx) -> dict:
        return blend_loss(out, batch, self.cfg)
