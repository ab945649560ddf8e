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

Starting weights (``init``): a patch run folder / checkpoint or a torchvision-layout DenseNet state dict
(:mod:`mvmammo.patches.init_weights`). Applied once, on a fresh run (no last.pt); config.json records the file's
absolute path and sha256, so resuming with another file is refused, and a resumed run continues from last.pt
without reading the file again (it may have moved).
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
from mvmammo.patches import init_weights
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
    init: str = ""               # starting weights file or patch run folder ("" = from scratch); see init_weights
    padding: str = "torch"       # "torch" or TensorFlow "same"; an init file's padding replaces the default

    def arch(self) -> DenseNetConfig:
        return DenseNetConfig(growth=self.growth, blocks=tuple(self.blocks), init_features=self.init_features,
                              bn_size=self.bn_size, padding=self.padding)


# config.json keys added after the first patch runs, with the value an older run folder implicitly had.
_LATER_KEYS = {"init": "", "padding": "torch", "init_sha256": ""}


def _json_config(cfg: PatchTrainConfig, init_sha256: str = "") -> dict:
    d = dataclasses.asdict(cfg)
    d["blocks"] = list(cfg.blocks)
    d["init_sha256"] = init_sha256
    return d


def _check_config(run: Path, cfg: PatchTrainConfig, init_sha256: str = "") -> None:
    path = run / "config.json"
    new = _json_config(cfg, init_sha256)
    if path.exists():
        old = json.loads(path.read_text())
        diff = [k for k in new if k not in ("epochs", "device") and old.get(k, _LATER_KEYS.get(k)) != new[k]]
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


def _resuming_from(run: Path, cfg: PatchTrainConfig) -> dict | None:
    """config.json of a run in ``run`` that started from the init file ``cfg.init`` names and has a last.pt to
    resume from; None otherwise (a fresh run, no init, or another init: the settings check decides then)."""
    path = run / "config.json"
    if not cfg.init or not (run / "last.pt").exists() or not path.exists():
        return None
    old = json.loads(path.read_text())
    same = old.get("init") and Path(old["init"]) == Path(cfg.init).expanduser().resolve()
    return old if same and all(f in old for f in init_weights.ARCH_FIELDS) else None


def train_patches(cfg: PatchTrainConfig, progress: bool = True, say=None) -> dict:
    """Train (or resume) the patch classifier; returns the last epoch's metrics, the best score and, with
    ``cfg.init``, what the init file gave ("init": info dict, or None on a resumed run). ``say(line)`` is called
    once with a line about the init file (the CLI prints it)."""
    from tqdm.auto import tqdm

    from mvmammo.patches.store import load_split
    from mvmammo.runlock import hold_run

    run = Path(cfg.out)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    amp = cfg.amp and device.type == "cuda"
    init_file, init_state, init_info, init_sha = None, None, None, ""
    recorded = _resuming_from(run, cfg)
    if recorded is not None:
        # A run that already started from this init file resumes from last.pt and never reads the file again
        # (it may have moved since): its architecture and sha256 are the ones config.json recorded.
        cfg = dataclasses.replace(cfg, init=recorded["init"], padding=recorded.get("padding", "torch"),
                                  **{f: (tuple(recorded[f]) if f == "blocks" else recorded[f])
                                     for f in init_weights.ARCH_FIELDS})
        init_sha = recorded.get("init_sha256", "")
    elif cfg.init:
        # Read, mapped and checked (strict) before the run folder is touched, so a bad file leaves nothing behind
        # (no config.json naming it); its architecture and sha256 join the settings the folder must agree with.
        # Applied below on a fresh run only.
        init_file = init_weights.read_init(cfg.init)
        arch = init_weights.resolve_arch(cfg.arch(), init_file)
        cfg = dataclasses.replace(cfg, init=init_file.path, padding=arch.padding,
                                  **{f: getattr(arch, f) for f in init_weights.ARCH_FIELDS})
        init_state, file_info = init_weights.initial_state(init_file, cfg.arch(), cfg.seed)
        init_sha = init_file.sha256
    with hold_run(run, "patches train"):
        _check_config(run, cfg, init_sha)
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
            if cfg.init and say:
                say(f"{cfg.init}: not re-applied; the run resumes from its last.pt")
        elif init_file:
            load_model_state(model, init_state, path=init_file.file)
            init_info = file_info
            if say:
                say(init_weights.describe(init_info))
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
    return {"last": last, "best": best, "run": str(run), "init": init_info}
