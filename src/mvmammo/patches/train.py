"""`mvmammo patches train`: the DenseNet patch classifier, with the run-folder conventions of the two-view loop.

Run folder: config.json (the resolved :class:`PatchTrainConfig`), metrics.jsonl (one strict-JSON line per
epoch: train loss, validation loss and the per-class one-vs-rest validation AUCs), best.pt (selected by the
validation malignant AUC, ties and undefined AUCs by the lower validation loss), last.pt (model, optimizer,
epoch, best score, RNG states) and DONE. Exact resume: each epoch's order and augmentation come from a
generator seeded by (seed, epoch), and last.pt restores the global RNGs, so an interrupted run continued to
the end gives the same weights as an uninterrupted one (a test checks this on CPU).

Augmentation: random horizontal and vertical flips per patch (a patch classifier should not care about the
breast's orientation; patches keep the source orientation). Loss: cross-entropy over the 4 classes. Adam.
On a GPU: bf16 autocast and channels_last (``amp``), torch.compile (``compile``); fp32 on CPU.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mvmammo import runlog
from mvmammo.errors import MvError
from mvmammo.evaluation.metrics import auc
from mvmammo.models.densenet import DenseNet, DenseNetConfig
from mvmammo.patches.runs import CLASSES, checkpoint
from mvmammo.training.checkpoint import load, load_model_state, rng_state, save_atomic, set_rng_state


@dataclass(frozen=True)
class PatchTrainConfig:
    patches: str                 # patch set folder (mvmammo patches extract)
    out: str                     # run folder
    growth: int = 32             # DenseNet-121 by default; smaller values make tiny test models
    blocks: tuple = (6, 12, 24, 16)
    init_features: int = 64
    bn_size: int = 4
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"         # auto = cuda when present
    amp: bool = True             # bf16 autocast + channels_last on a GPU (ignored on CPU)
    compile: bool = False

    def arch(self) -> DenseNetConfig:
        return DenseNetConfig(growth=self.growth, blocks=tuple(self.blocks), init_features=self.init_features,
                              bn_size=self.bn_size)


def _json_config(cfg: PatchTrainConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d["blocks"] = list(cfg.blocks)
    return d


def _check_config(run: Path, cfg: PatchTrainConfig) -> None:
    path = run / "config.json"
    new = _json_config(cfg)
    if path.exists():
        old = json.loads(path.read_text())
        diff = [k for k in new if k not in ("epochs", "device") and old.get(k) != new[k]]
        if diff:
            raise MvError(f"{run}: a patch run with other settings ({', '.join(diff)}) is here; use another --out "
                          "(only --epochs may change on resume)")
    tmp = path.with_name(".config.json.tmp")
    tmp.write_text(json.dumps(new, indent=2) + "\n")
    os.replace(tmp, path)


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random flips per patch: x (B, 1, P, P)."""
    flip_w = torch.rand(x.shape[0], generator=g) < 0.5
    flip_h = torch.rand(x.shape[0], generator=g) < 0.5
    x = torch.where(flip_w.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
    return torch.where(flip_h.view(-1, 1, 1, 1).to(x.device), x.flip(-2), x)


@torch.no_grad()
def evaluate(model, patches: np.ndarray, labels: np.ndarray, batch_size: int, device, amp: bool) -> dict:
    """Validation loss and one-vs-rest AUC per class."""
    model.eval()
    probs, loss = [], 0.0
    for s in range(0, len(labels), batch_size):
        x = torch.from_numpy(patches[s:s + batch_size].astype(np.float32)).unsqueeze(1).to(device)
        y = torch.from_numpy(np.array(labels[s:s + batch_size])).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x).float()
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        probs.append(F.softmax(logits, 1).cpu().numpy())
    p = np.concatenate(probs) if probs else np.zeros((0, len(CLASSES)))
    import warnings

    out = {"val_loss": loss / max(len(labels), 1)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class absent from validation: AUC nan, said in docs
        for k, c in enumerate(CLASSES):
            out[f"val_auc_{c}"] = auc((labels == k).astype(int), p[:, k]) if len(labels) else float("nan")
    return out


def _score(m: dict) -> tuple:
    a = m["val_auc_malignant"]
    return (a if a is not None and math.isfinite(a) else -1.0, -m["val_loss"])


def train_patches(cfg: PatchTrainConfig, progress: bool = True) -> dict:
    """Train (or resume) the patch classifier; returns the last epoch's metrics and the best score."""
    from tqdm.auto import tqdm

    from mvmammo.patches.store import load_split
    from mvmammo.runlock import hold_run

    run = Path(cfg.out)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    amp = cfg.amp and device.type == "cuda"
    with hold_run(run, "patches train"):
        _check_config(run, cfg)
        xtr, ytr = load_split(cfg.patches, "train")
        xva, yva = load_split(cfg.patches, "val")
        if len(ytr) == 0:
            raise MvError(f"{cfg.patches}: no train patches; check the exam table's split column and the annotations")
        patch = int(xtr.shape[-1])
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        model = DenseNet(cfg.arch()).to(device)
        if amp:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        metrics_path = run / "metrics.jsonl"
        start, best = 0, None
        if (run / "last.pt").exists():
            ck = load(run / "last.pt")
            load_model_state(model, ck["model"], path=run / "last.pt")
            opt.load_state_dict(ck["optimizer"])
            set_rng_state(ck["rng"])
            start, best = int(ck["epoch"]) + 1, tuple(ck["best"]) if ck.get("best") is not None else None
            runlog.truncate(metrics_path, start)
        step_fn = torch.compile(model) if cfg.compile else model
        last = {}
        for epoch in range(start, cfg.epochs):
            t0 = time.time()
            g = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
            order = torch.randperm(len(ytr), generator=g).numpy()
            model.train()
            total, n = 0.0, 0
            bar = tqdm(range(0, len(order), cfg.batch_size), desc=f"epoch {epoch}", disable=not progress,
                       leave=False)
            for s in bar:
                idx = np.sort(order[s:s + cfg.batch_size])   # sorted: contiguous reads from the memmapped shards
                x = _augment(torch.from_numpy(xtr[idx].astype(np.float32)).unsqueeze(1), g).to(device)
                y = torch.from_numpy(ytr[idx]).to(device)
                if amp:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    loss = F.cross_entropy(step_fn(x).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                n += len(idx)
            last = {"epoch": epoch, "train_loss": total / n,
                    **evaluate(model, xva, yva, cfg.batch_size, device, amp),
                    "seconds": round(time.time() - t0, 3)}
            score = _score(last)
            if best is None or score > best:
                best = score
                save_atomic(checkpoint(model, patch, epoch=epoch), run / "best.pt")
            with open(metrics_path, "a") as f:
                f.write(runlog.dumps(last) + "\n")
            save_atomic(checkpoint(model, patch, epoch=epoch, optimizer=opt.state_dict(), rng=rng_state(),
                                   best=list(best)), run / "last.pt")
        (run / "DONE").write_text("")
    return {"last": last, "best": best, "run": str(run)}
