"""View-utilisation metrics of a trained run (methods.md section 5): how much the prediction uses each view.

All metrics work on the late-fusion interface only (model.encode -> h_cc, h_mlo (N, fc_dim); model.fuse),
on the deterministic centre window of every breast of the evaluation split, with the run's best.pt.

- Ablation: replace h_v by (a) zeros, (b) the TRAINING-set mean of h_v, (c) h_v of another breast of the
  same split (a random permutation; AUC averaged over ``n_perm`` permutations). A(CC) below means "CC kept,
  MLO ablated".
- Conditional utilisation: u(MLO|CC) = (A(both) - A(CC)) / A(both), u(CC|MLO) symmetric; the above-chance
  form (A(both) - A(CC)) / (A(both) - 0.5); imbalance d_util = u(MLO|CC) - u(CC|MLO).
- Shapley (2 players, closed form) with v(S) = AUC with the views outside S ablated by the training mean,
  and v(empty) = 0.5 (chance AUC: the convention, as ablating both views makes every score equal).
  phi_CC + phi_MLO = v(both) - v(empty); imbalance |phi_CC - phi_MLO| / (|phi_CC| + |phi_MLO|).
- Linear probes: L2 logistic regression on frozen h_v of the train split, C by validation AUC (probes.py).

Uni-view models: only A(view) and that view's probe apply; the rest is reported as not applicable (None).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from mvmammo import LABELS
from mvmammo.analysis.probes import probe
from mvmammo.evaluation.metrics import auc

MODES = ("zero", "mean", "permute")


# ---------------------------------------------------------------- pure metrics (numbers in, numbers out)
def rates(a_both: float, a_cc: float, a_mlo: float) -> dict:
    """Conditional utilisation (and the Shapley values) from A(both), A(CC kept, MLO ablated),
    A(MLO kept, CC ablated)."""
    def above(x):
        return (a_both - x) / (a_both - 0.5) if a_both != 0.5 else float("nan")

    u_mlo, u_cc = (a_both - a_cc) / a_both, (a_both - a_mlo) / a_both
    return {"auc_cc_only": a_cc, "auc_mlo_only": a_mlo, "u_mlo_given_cc": u_mlo, "u_cc_given_mlo": u_cc,
            "above_chance_mlo_given_cc": above(a_cc), "above_chance_cc_given_mlo": above(a_mlo),
            "d_util": u_mlo - u_cc, **shapley2(a_both, a_cc, a_mlo)}


def shapley2(v_both: float, v_cc: float, v_mlo: float, v_none: float = 0.5) -> dict:
    """Two-player Shapley values; phi_cc + phi_mlo == v_both - v_none exactly."""
    phi_cc = 0.5 * ((v_both - v_mlo) + (v_cc - v_none))
    phi_mlo = 0.5 * ((v_both - v_cc) + (v_mlo - v_none))
    den = abs(phi_cc) + abs(phi_mlo)
    return {"phi_cc": phi_cc, "phi_mlo": phi_mlo, "v_none": v_none,
            "imbalance": abs(phi_cc - phi_mlo) / den if den > 0 else 0.0}


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # one class only -> nan, reported as such
        return auc(y, s)


# ---------------------------------------------------------------- features and ablated scores
@torch.no_grad()
def features(model, maker, rows: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    """{"h_<view>": (N, fc_dim) float32, "y": (N, 2)} on the centre window, eval mode."""
    was = model.training
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(rows), batch_size):
        b = maker.make(rows[start:start + batch_size], train=False)
        enc = model.encode(b["cc"] if "cc" in model.views else None, b["mlo"] if "mlo" in model.views else None)
        for v in model.views:
            parts.setdefault(f"h_{v}", []).append(enc[f"h_{v}"].float().cpu().numpy())
    model.train(was)
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out["y"] = maker.cache.labels(rows)
    return out


@torch.no_grad()
def scores(model, h: dict[str, np.ndarray], device) -> np.ndarray:
    """Probabilities (N, 2) from given per-view features through model.fuse (and the model's inference gate,
    model.fusion_gate, so a gated model is scored as predict scores it)."""
    t = {k: torch.as_tensor(v, device=device) for k, v in h.items()}
    out = model.fuse(**t)
    if hasattr(model, "apply_gate"):
        model.apply_gate(out)
    return torch.sigmoid(out["logits"].float()).cpu().numpy()


def ablated(h: np.ndarray, mode: str, train_mean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """h (N, F) with the view ablated: zeros, the training mean, or another breast's features."""
    if mode == "zero":
        return np.zeros_like(h)
    if mode == "mean":
        return np.broadcast_to(train_mean, h.shape).copy()
    if mode == "permute":
        return h[rng.permutation(len(h))]
    raise ValueError(f"unknown ablation {mode!r}; one of {MODES}")


def view_aucs(model, feats: dict, train_mean: dict, device, mode: str, n_perm: int = 5, seed: int = 0) -> dict:
    """{label: (A(both), A(CC kept), A(MLO kept))} for one ablation mode of a two-view model."""
    rng = np.random.default_rng(seed)
    y = feats["y"]
    both = scores(model, {"h_cc": feats["h_cc"], "h_mlo": feats["h_mlo"]}, device)
    reps = n_perm if mode == "permute" else 1
    cc_only, mlo_only = [], []
    for _ in range(reps):
        cc_only.append(scores(model, {"h_cc": feats["h_cc"],
                                      "h_mlo": ablated(feats["h_mlo"], mode, train_mean["h_mlo"], rng)}, device))
        mlo_only.append(scores(model, {"h_cc": ablated(feats["h_cc"], mode, train_mean["h_cc"], rng),
                                       "h_mlo": feats["h_mlo"]}, device))
    out = {}
    for j, label in enumerate(LABELS):
        a_cc = float(np.mean([_auc(y[:, j], s[:, j]) for s in cc_only]))
        a_mlo = float(np.mean([_auc(y[:, j], s[:, j]) for s in mlo_only]))
        out[label] = (_auc(y[:, j], both[:, j]), a_cc, a_mlo)
    return out


# ---------------------------------------------------------------- a run folder
def analyze_model(model, maker, rows_by_split: dict[str, np.ndarray], split: str, device,
                  n_perm: int = 5, seed: int = 0, probes: bool = True) -> dict:
    """All metrics for a model; rows_by_split has "train", "val" and ``split``."""
    feats = {s: features(model, maker, rows_by_split[s]) for s in dict.fromkeys(("train", "val", split))}
    ev = feats[split]
    views = tuple(model.views)
    train_mean = {f"h_{v}": feats["train"][f"h_{v}"].mean(0) for v in views}
    res: dict = {"views": list(views), "n_breasts": int(len(ev["y"])), "window": "centre", "labels": {}}
    for j, label in enumerate(LABELS):
        res["labels"][label] = {"n_pos": int(ev["y"][:, j].sum())}
    if len(views) == 2:
        for mode in MODES:
            per = view_aucs(model, ev, train_mean, device, mode, n_perm, seed)
            for label, (a_both, a_cc, a_mlo) in per.items():
                lab = res["labels"][label]
                lab["auc_both"] = a_both
                lab.setdefault("ablation", {})[mode] = rates(a_both, a_cc, a_mlo)  # includes its Shapley values
                if mode == "mean":  # the headline convention (Wu et al. 2022's training-mean ablation)
                    lab["shapley"] = {"ablation": "mean", **shapley2(a_both, a_cc, a_mlo)}
    else:
        (v,) = views
        s = scores(model, {f"h_{v}": ev[f"h_{v}"]}, device)
        for j, label in enumerate(LABELS):
            lab = res["labels"][label]
            lab["auc_both"] = None
            lab[f"auc_{v}_only"] = _auc(ev["y"][:, j], s[:, j])
            lab["ablation"] = None
            lab["shapley"] = None
    if probes:
        for j, label in enumerate(LABELS):
            res["labels"][label]["probe"] = {
                v: probe(*[(feats[s][f"h_{v}"], feats[s]["y"][:, j]) for s in ("train", "val", split)])
                for v in views}
    return res


def analyze_run(run_dir: str | Path, split: str = "test", checkpoint: str = "best", device: str | None = None,
                n_perm: int = 5, probes: bool = True) -> dict:
    """Load a run folder's checkpoint, compute everything, write utilization[_<split>].json; return it."""
    from mvmammo.evaluation.loading import open_run

    run = open_run(run_dir, checkpoint, device)
    run_dir, cfg, cache, model, maker, dev = run.run_dir, run.cfg, run.cache, run.model, run.maker, run.device
    rows = {s: cache.rows(s) for s in ("train", "val", split)}
    res = {"run": run_dir.name, "family": cfg.model.family, "split": split, "checkpoint": checkpoint,
           **analyze_model(model, maker, rows, split, dev, n_perm=n_perm, seed=cfg.run.seed, probes=probes)}
    name = "utilization.json" if split == "test" else f"utilization_{split}.json"
    (run_dir / name).write_text(json.dumps(res, indent=2, default=_json_default) + "\n")
    return res


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    raise TypeError(type(x))
