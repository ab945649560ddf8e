"""Predictions with test-time augmentation: the table every metric, ensemble and plot reads.

TTA is an explicit choice: tta=0 is the deterministic centre window; tta=k > 0 draws k random windows per
breast (the training augmentation, from a generator seeded per (seed, window index) so predictions are
reproducible) and the breast's prediction is the mean of the k probabilities.
"""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import torch

from mvmammo import LABELS
from mvmammo.data.sampler import batches


def presence(cache, rows: np.ndarray) -> np.ndarray:
    """bool (B, 2) [cc, mlo]: which views each cache row holds (all True for a cache without one-view rows)."""
    rows = np.asarray(rows)
    if hasattr(cache, "present"):
        return np.asarray(cache.present(rows), dtype=bool).reshape(len(rows), 2)
    index = cache.index
    if "has_cc" in index.columns and "has_mlo" in index.columns:
        return index[["has_cc", "has_mlo"]].to_numpy().astype(bool)[rows]
    return np.ones((len(rows), 2), dtype=bool)


def combine(model: torch.nn.Module, out: dict, present: torch.Tensor) -> torch.Tensor:
    """Probabilities (B, 2) of one forward pass, by family, for breasts with one or both views.

    present: float (B, 2) [cc, mlo]. Joint/Shared were called with the absent view masked, so their fused
    ``logits`` already read the present view alone. Split has no fused reading of one view: a one-view breast
    takes that view's own model's probability. A uni-view model gives NaN for a breast without its view.
    """
    from mvmammo.models.multiview import SplitResNet, UniViewModel

    core = getattr(model, "_orig_mod", model)
    p = torch.sigmoid(out["logits"].float())
    has_cc, has_mlo = present[:, :1] > 0, present[:, 1:] > 0  # (B, 1) each
    if isinstance(core, SplitResNet):
        p_cc, p_mlo = torch.sigmoid(out["logits_cc"].float()), torch.sigmoid(out["logits_mlo"].float())
        p = torch.where(has_cc & has_mlo, p, torch.where(has_cc, p_cc, p_mlo))
    elif isinstance(core, UniViewModel):
        own = has_cc if core.views == ("cc",) else has_mlo
        p = torch.where(own, p, torch.full_like(p, float("nan")))
    return p


# Windows per forward that the throughput benchmark stacks TTA draws into (benchmarks/throughput.py). The
# default of predict_outputs is the chunk's own size, so a forward never holds more windows than batch_size
# (the memory a user sized their evaluation batch for); a larger window_batch stacks several draws.
WINDOW_BATCH = 64


def draw_groups(n_windows: int, chunk: int, window_batch: int) -> list[range]:
    """The TTA draws 0..n_windows-1 cut into consecutive groups whose stacked windows (len(group) * chunk)
    fit window_batch; at least one draw per group, and groups of near-equal size (fewer shapes to compile)."""
    per = max(1, int(window_batch) // max(1, chunk))
    n_groups = -(-n_windows // per)
    bounds = [round(i * n_windows / n_groups) for i in range(n_groups + 1)]
    return [range(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


@torch.no_grad()
def predict_outputs(model: torch.nn.Module, maker, rows: np.ndarray, tta: int = 0, batch_size: int = 32,
                    seed: int = 0, precision: str = "fp32", progress: bool = False,
                    window_batch: int | None = None) -> dict[str, np.ndarray]:
    """{"p", "logits_cc", "logits_mlo"}: each (n_windows, N, 2) float64, n_windows = max(tta, 1).

    "p": probabilities (benign, malignant) by :func:`combine`; "logits_<view>": the model's per-view logits
    (NaN where the breast lacks the view or the family has none). Breasts with one view are read with the
    absent view masked (view_mask), so a cache without one-view rows runs exactly as before.

    batch_size: breasts loaded (and sent to the device) at once. window_batch: windows per forward pass; the
    draws of one chunk are augmented one by one (each from its own generator) and stacked along the batch
    so that a forward reads up to window_batch windows (at least one draw's; default batch_size, i.e. one
    draw per forward for full chunks and several for a short last chunk). The model is in eval mode, so
    every window's output depends on that window alone: the result equals one forward per draw.
    """
    was_training = model.training
    model.eval()
    n_windows = max(tta, 1)
    # One generator per window index, each advanced chunk by chunk: the same boxes as a window-outer loop,
    # but every breast is loaded (and sent to the device) once for all its windows.
    gens = [torch.Generator().manual_seed(int(seed) * 1000 + t) if tta > 0 else None for t in range(n_windows)]
    chunks = batches(np.asarray(rows), batch_size)
    keys = ("p", "logits_cc", "logits_mlo")
    acc: dict[str, list[list[torch.Tensor]]] = {k: [[] for _ in range(n_windows)] for k in keys}
    loaded = maker.loaded(chunks)
    if progress:
        from tqdm.auto import tqdm

        loaded = tqdm(loaded, total=len(chunks), desc="predict", unit="batch", leave=False, file=sys.stderr)
    for rows_c, raw, labels in loaded:
        pres_np = presence(maker.cache, rows_c)  # host side: deciding on the mask needs no device sync
        present = raw.get("present")  # already on the device with the windows (BatchMaker.load, Prefetcher)
        if present is None:
            present = torch.from_numpy(pres_np.astype(np.float32)).to(maker.device)
        two_view = bool(pres_np.all())
        n = len(rows_c)
        for group in draw_groups(n_windows, n, window_batch or batch_size):
            views = {"cc": [], "mlo": []}
            for t in group:
                batch = maker.assemble(rows_c, raw, labels, train=tta > 0, generator=gens[t])
                for v in views:
                    views[v].append(batch[v])
            del batch
            k = len(group)
            # (k * n, C, H, W), draw-major: rows [j * n, (j + 1) * n) are draw group[j]
            cc, mlo = (x[0] if k == 1 else torch.cat(x) for x in (views["cc"], views["mlo"]))
            del views
            pres_k = present if k == 1 else present.repeat(k, 1)
            with torch.autocast(maker.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                out = model(cc, mlo, view_mask=None if two_view else pres_k)
            del cc, mlo
            got = {"p": combine(model, out, pres_k)}  # stays on the device: one copy at the end
            for i, v in enumerate(("cc", "mlo")):
                z = out.get(f"logits_{v}")
                z = torch.full_like(out["logits"], float("nan")) if z is None else z
                got[f"logits_{v}"] = torch.where(pres_k[:, i:i + 1] > 0, z.float(),
                                                 torch.full_like(z.float(), float("nan")))
            for key, x in got.items():
                for j, t in enumerate(group):
                    acc[key][t].append(x[j * n:(j + 1) * n])
    model.train(was_training)
    if not len(rows):
        return {k: np.zeros((n_windows, 0, 2), dtype=np.float64) for k in keys}
    return {k: torch.stack([torch.cat(x) for x in acc[k]]).cpu().double().numpy() for k in keys}


def predict_rows(model: torch.nn.Module, maker, rows: np.ndarray, tta: int = 0, batch_size: int = 32,
                 seed: int = 0, precision: str = "fp32", window_batch: int | None = None) -> np.ndarray:
    """Probabilities (n_windows, N, 2) for benign, malignant; n_windows = max(tta, 1)."""
    return predict_outputs(model, maker, rows, tta, batch_size, seed, precision, window_batch=window_batch)["p"]


def predictions_table(cache, rows: np.ndarray, probs: np.ndarray, seed: int, run_name: str) -> pd.DataFrame:
    """Long table: one line per (breast, window) plus the window average as tta_index = -1."""
    index = cache.index.iloc[rows].reset_index(drop=True)
    frames = []
    n_windows = probs.shape[0]
    for t in list(range(n_windows)) + [-1]:
        p = probs.mean(axis=0) if t == -1 else probs[t]
        f = pd.DataFrame({
            "run": run_name, "seed": seed, "breast_id": index["breast_id"],
            "patient_id": index["patient_id"], "split": index["split"], "tta_index": t,
        })
        for j, label in enumerate(LABELS):
            f[f"p_{label}"] = p[:, j]
            f[label] = index[label].to_numpy()
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def breast_level(pred: pd.DataFrame) -> pd.DataFrame:
    """The averaged (tta_index == -1) rows: one per breast."""
    return pred[pred["tta_index"] == -1].reset_index(drop=True)
