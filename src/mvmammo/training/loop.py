"""The one training loop. Variation comes from the config (model family, task, regularizers) and hooks.

Per epoch: the paper's sampling (all labelled breasts + as many label-free ones, drawn afresh), Adam steps
on augmented batches, validation AUC (malignant, benign) on the centre window, best.pt by validation
malignant AUC, last.pt for exact resume. All randomness of an epoch is seeded from (seed, epoch), so a run
killed at any point and started again with the same command reproduces the uninterrupted run.

What a method (training/methods/: the paper's regularizers, reg.method) may change is its view mask, loss,
backward pass, model preparation, training rows and hooks; the loop itself stays the same for all of them.
Hooks are objects with any of: ``on_train_start(ctx)``, ``after_backward(ctx) -> dict``,
``after_step(ctx) -> dict``, ``on_epoch_end(ctx) -> dict``, ``on_train_end(ctx)``. Returned dicts are
merged into the step or epoch line of metrics.jsonl. Analysis hooks (gradient norms, LCA, TensorBoard) are
handed in by the caller (analysis/hooks.py), so training imports nothing from analysis.
"""
from __future__ import annotations

import contextlib
import math
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mvmammo import config as config_mod
from mvmammo import runlog
from mvmammo.config import Config
from mvmammo.errors import MvError
from mvmammo.data.sampler import batches, epoch_rows
from mvmammo.models.registry import build_model
from mvmammo.runlock import hold_run
from mvmammo.training import checkpoint as ckpt
from mvmammo.training import distributed
from mvmammo.training.checks import check as check_config
from mvmammo.training import holdout
from mvmammo.training.methods import build_methods
from mvmammo.training.accel import compile_or_eager
from mvmammo.training.inputs import BatchMaker, maker_for, prepare_cache
from mvmammo.training.optim import build_optimizer, current_lrs
from mvmammo.training.tasks import get_task, task_name
from mvmammo.training.validation import auc_or_nan, evaluate_rows


# A step loss this many times the first epoch's level is a divergence even when finite (optim.lr=1e6 reaches
# 1e20 and would otherwise "finish"). BCE summed over the two labels starts near 1.4; a run that is merely
# unstable stays within tens of that, so 1000x leaves honest runs alone and catches explosions early.
EXPLOSION_FACTOR = 1000.0


class TrainingDiverged(MvError):
    """The loss became NaN, infinite or exploded; the last good checkpoint is kept."""


class ConfigMismatch(MvError):
    """A run folder holds a run with a different config; resuming it would mix two experiments."""


@dataclass
class Context:
    """What hooks see. Tensors stay on the device; hooks decide when to synchronise."""

    cfg: Config
    run_dir: Path
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    maker: BatchMaker
    train_rows: np.ndarray
    val_rows: np.ndarray
    epoch: int = 0
    step: int = 0
    batch: dict | None = None
    out: dict | None = None
    losses: dict | None = None
    task: Any = None  # the config's plain task loss, (out, batch, cfg) -> dict (what LCA allocates)
    view_mask: torch.Tensor | None = None  # this step's (B, 2) mask, None = both views
    steps_per_epoch: int = 0  # optimizer steps of the current epoch (this rank's, after the global batching)
    epoch_start_step: int = 0  # the global step count when the current epoch began
    extra: dict = field(default_factory=dict)


def _seed(cfg: Config, epoch: int, stream: int) -> int:
    return int(np.random.SeedSequence([cfg.run.seed, epoch, stream]).generate_state(1)[0])


def _git_revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _resume_key(cfg: Config) -> dict:
    """The parts of a config that must match to resume a run (the epoch budget and logging may change)."""
    d = config_mod.to_dict(cfg)
    d["optim"].pop("epochs")
    d["data"].pop("cache_dir", None)  # where derived windows live, not what they are (the cache key says that)
    for k in ("progress", "max_steps", "out", "device", "tta", "prefetch"):
        d["run"].pop(k)
    return d


def _prepare_run_dir(cfg: Config) -> Path:
    run_dir = Path(cfg.run.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "config.json"
    if cfg_path.exists() and (run_dir / "last.pt").exists():
        old, new = _resume_key(config_mod.load(cfg_path)), _resume_key(cfg)
        if old != new:
            keys = [f"{sec}.{k}" for sec in new for k in new[sec] if old.get(sec, {}).get(k) != new[sec][k]]
            raise ConfigMismatch(f"{run_dir} holds a run with a different config ({', '.join(keys[:6])} differ from "
                                 f"{cfg_path}); use another run.out, or delete the folder to start again")
    config_mod.save(cfg, cfg_path)
    (run_dir / "git_revision.txt").write_text(_git_revision() + "\n")
    return run_dir


def _truncate_metrics(path: Path, keep_before_epoch: int) -> None:
    """Drop metric lines of epochs that will be recomputed after a resume, and any torn line (a kill mid-write)."""
    torn = runlog.truncate(path, keep_before_epoch)
    if torn:
        print(f"{path}: dropped {torn} incomplete line(s) left by an interrupted write")


def _call(hooks, name: str, ctx: Context) -> dict:
    merged: dict = {}
    for h in hooks:
        fn = getattr(h, name, None)
        if fn is not None:
            merged.update(fn(ctx) or {})
    return merged


def _to_py(d: dict) -> dict:
    return {k: (float(v) if isinstance(v, (torch.Tensor, np.floating)) else v) for k, v in d.items()}


def train(cfg: Config, hooks: list[Any] | tuple = ()) -> Path:
    """Train (or resume) the run of ``cfg`` into cfg.run.out; returns the run folder.

    The config is checked before anything is written; the run folder is locked (one process per folder,
    released by the OS if this process dies) for the whole run by the process that writes it (rank 0).
    """
    check_config(cfg)
    dist_info, device = distributed.setup(cfg.run.device)  # torchrun: one process per GPU
    with contextlib.ExitStack() as stack:
        if dist_info.main:
            stack.enter_context(hold_run(cfg.run.out, "train"))
        return _train(cfg, hooks, dist_info, device)


def _train(cfg: Config, hooks, dist_info, device) -> Path:
    with distributed.main_first(dist_info):  # rank 0 writes the run folder and builds the cache first
        run_dir = _prepare_run_dir(cfg) if dist_info.main else Path(cfg.run.out)
        cache = prepare_cache(cfg, progress=cfg.run.progress and dist_info.main)
    torch.manual_seed(cfg.run.seed)
    maker = maker_for(cfg, cache, device)
    train_rows, val_rows = cache.rows("train"), cache.rows("val")
    train_rows = holdout.training_rows(cache, train_rows, cfg)  # minus G-Blend's V (data.holdout_fraction)
    task = get_task(task_name(cfg))
    methods = build_methods(cfg, task)
    train_rows = methods.training_rows(cache, train_rows)
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise MvError(f"{cfg.data.table or 'the synthetic cohort'}: training needs rows with split 'train' and "
                      f"'val' (found {len(train_rows)} train, {len(val_rows)} val); assign a validation split "
                      "by patient in the exam table")

    model = build_model(cfg.model, in_channels=cache.spec.channels)
    methods.prepare_model(model)  # pretrained columns, frozen groups, blending weights, method state
    model.to(device)
    if cfg.run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg.optim)
    step_model = compile_or_eager(distributed.wrap(model, dist_info, device, cfg.run.sync_bn), cfg.run.compile)
    save = ckpt.save_atomic if dist_info.main else (lambda obj, path: None)  # rank 0 writes the run folder
    hooks = holdout.hooks(cfg) + methods.hooks() + list(hooks)

    start_epoch, step, best = 0, 0, -math.inf
    loss_ref: float | None = None  # the first epoch's mean training loss (divergence reference)
    last_path = run_dir / "last.pt"
    if last_path.exists():
        state = ckpt.load(last_path, map_location=device)
        ckpt.load_model_state(model, state["model"], path=last_path)
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step, best = state["epoch"] + 1, state["step"], state["best"]
        loss_ref = state.get("loss_ref")
        ckpt.set_rng_state(state["rng"])
        methods.load_state_dict(state.get("methods", {}))  # state methods carry across epochs (absent: fresh)
        print(f"resuming {run_dir} after epoch {state['epoch']} (step {step}, best val AUC {best:.4f})")
    if dist_info.main:
        _truncate_metrics(run_dir / "metrics.jsonl", start_epoch)

    ctx = Context(cfg, run_dir, model, optimizer, maker, train_rows, val_rows, start_epoch, step, task=task)
    _call(hooks, "on_train_start", ctx)
    metrics_file = open(run_dir / "metrics.jsonl", "a") if dist_info.main else open(os.devnull, "w")
    try:
        for epoch in range(start_epoch, cfg.optim.epochs):
            ctx.epoch = epoch
            t0 = time.time()
            torch.manual_seed(_seed(cfg, epoch, 1))  # input noise, dropout-like draws
            gen = torch.Generator().manual_seed(_seed(cfg, epoch, 2))  # augmentation boxes
            order = epoch_rows(train_rows, cache.labels(train_rows), cfg.run.seed, epoch, cfg.data.neg_ratio,
                               cfg.data.sampling, cache.index)
            chunks = distributed.global_batches(batches(order, cfg.optim.batch_size), dist_info, cfg.optim.batch_size)
            ctx.steps_per_epoch, ctx.epoch_start_step = len(chunks), step
            step_lines, train_probs, train_rows_seen = [], [], []
            model.train()
            bar = _bar(chunks, cfg.run.progress, f"{run_dir.name} epoch {epoch + 1}/{cfg.optim.epochs}")
            ticks = iter(bar)  # advanced by hand: zip() would keep the previous batch in its reused result tuple
            for batch in maker.batches(chunks, train=True, generator=gen, shard=dist_info.shard):
                next(ticks, None)
                rows = batch["rows"]  # this rank's rows of the global batch
                ctx.step, ctx.batch = step, batch
                view_mask, sample_weight = methods.view_mask(ctx, len(rows), gen, device)
                present = batch.get("present")  # (B, 2) [cc, mlo]: breasts with one view (data.missing_view=mask)
                if present is not None:
                    view_mask = present if view_mask is None else view_mask * present
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.run.precision == "bf16"):
                    out = step_model(batch["cc"], batch["mlo"], view_mask=view_mask)
                if sample_weight is not None:
                    out = dict(out, sample_weight=sample_weight)
                ctx.out, ctx.view_mask = out, view_mask
                losses = methods.loss(out, batch, ctx)
                loss = losses["loss"]
                if device.type == "cpu" or step % 50 == 0:
                    _check_finite(loss, run_dir, epoch, step, batch, maker, _limit(loss_ref, step_lines))
                optimizer.zero_grad(set_to_none=True)
                ctx.losses = losses
                methods.backward(losses, ctx)
                logged = _call(hooks, "after_backward", ctx)
                if cfg.optim.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                optimizer.step()
                step += 1
                ctx.step = step
                logged.update(_call(hooks, "after_step", ctx))
                step_lines.append((step, {k: v.detach() for k, v in losses.items()}, logged))
                _inject_fault(step, dist_info)
                train_probs.append(torch.sigmoid(out["logits"].detach().float()))
                train_rows_seen.append(rows)
                # Drop this step's model input (~250 MB at batch 4, full resolution) before the next batch is
                # assembled, so two batches' inputs are never on the device at once.
                ctx.batch = ctx.out = None
                del batch, out
                if cfg.run.max_steps and step >= cfg.run.max_steps:
                    break
            if hasattr(bar, "close"):
                bar.close()
            # One host synchronisation per epoch for the step lines.
            for s, ls, logged in step_lines:
                _check_finite(ls["loss"], run_dir, epoch, s, None, maker, _limit(loss_ref, step_lines))
                metrics_file.write(runlog.dumps({"kind": "step", "epoch": epoch, "step": s, **_to_py(ls),
                                                 **_to_py(logged)}) + "\n")
            tp, seen = distributed.gather_arrays(dist_info, torch.cat(train_probs).cpu().numpy(),
                                                 np.concatenate(train_rows_seen))
            ty = cache.labels(seen)
            val = evaluate_rows(model, maker, val_rows, cfg)
            line = {"kind": "epoch", "epoch": epoch, "step": step, "time_s": round(time.time() - t0, 3),
                    "train_loss": float(np.mean([float(ls["loss"]) for _, ls, _ in step_lines])),
                    "train_auc_malignant": auc_or_nan(ty[:, 1], tp[:, 1]),
                    "train_auc_benign": auc_or_nan(ty[:, 0], tp[:, 0]),
                    "val_auc_malignant": val["auc_malignant"], "val_auc_benign": val["auc_benign"],
                    "val_loss": val["loss"], "breasts": int(len(order)),
                    **{f"lr_{k}": v for k, v in current_lrs(optimizer).items()}}
            line.update(_to_py(_call(hooks, "on_epoch_end", ctx)))
            metrics_file.write(runlog.dumps(line) + "\n")
            metrics_file.flush()
            if loss_ref is None and math.isfinite(line["train_loss"]):
                loss_ref = line["train_loss"]
            score = val["auc_malignant"]
            improved = math.isfinite(score) and score > best
            if improved:
                best = score
                save({"model": ckpt.model_state(model), "epoch": epoch, "val_auc_malignant": score},
                     run_dir / "best.pt")
            save({"model": ckpt.model_state(model), "optimizer": optimizer.state_dict(), "epoch": epoch,
                  "step": step, "best": best, "loss_ref": loss_ref, "rng": ckpt.rng_state(),
                  "methods": methods.state_dict()}, last_path)
            if cfg.run.progress and dist_info.main:
                print(f"{run_dir.name} epoch {epoch + 1}/{cfg.optim.epochs}: train loss {line['train_loss']:.4f}, "
                      f"val AUC malignant {score:.3f} benign {val['auc_benign']:.3f}"
                      f"{' (best)' if improved else ''} [{line['time_s']:.1f} s]", flush=True)
            if cfg.run.max_steps and step >= cfg.run.max_steps:
                break
        if not (run_dir / "best.pt").exists() and last_path.exists():
            # Validation AUC undefined throughout (one class only): keep the last weights as the selection.
            save({"model": ckpt.load(last_path)["model"], "epoch": cfg.optim.epochs - 1,
                  "val_auc_malignant": float("nan")}, run_dir / "best.pt")
        _call(hooks, "on_train_end", ctx)
    finally:
        metrics_file.close()
    if dist_info.main:
        (run_dir / "DONE").write_text(f"best_val_auc_malignant {best}\n")
    distributed.cleanup(dist_info)
    return run_dir


def _inject_fault(step: int, dist_info) -> None:
    """Fault injection for the elastic-restart test: MVMAMMO_FAULT_KILL="RANK:STEP" makes that rank SIGKILL itself
    after that optimizer step, on torchrun's first attempt only (TORCHELASTIC_RESTART_COUNT=0). Unset: nothing."""
    spec = os.environ.get("MVMAMMO_FAULT_KILL")
    if not spec or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return
    rank, at = (int(x) for x in spec.split(":"))
    if dist_info.rank == rank and step == at:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _limit(loss_ref: float | None, step_lines: list) -> float:
    """The loss above which a finite loss counts as an explosion: EXPLOSION_FACTOR x the first epoch's mean
    training loss, or, during the first epoch, x the first step's loss."""
    ref = loss_ref
    if ref is None and step_lines:
        ref = float(step_lines[0][1]["loss"])
    if ref is None or not math.isfinite(ref):
        return math.inf
    return EXPLOSION_FACTOR * max(ref, 1e-3)


def _check_finite(loss: torch.Tensor, run_dir: Path, epoch: int, step: int, batch, maker,
                  limit: float = math.inf) -> None:
    value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    if math.isfinite(value) and value <= limit:
        return
    ids = ""
    if batch is not None:
        ids = ", breasts " + ", ".join(maker.cache.index.breast_id.iloc[batch["rows"]].astype(str).tolist()[:8])
    what = f"loss is {value}" if not math.isfinite(value) else \
        f"loss exploded to {value:.3g} (more than {EXPLOSION_FACTOR:g}x its first-epoch level)"
    last = run_dir / "last.pt"
    kept = (f"The last good checkpoint ({last}) is kept; lower optim.lr, set optim.grad_clip, or check those "
            "images, then rerun to resume.") if last.exists() else \
        "No checkpoint was written yet; lower optim.lr or set optim.grad_clip, or check those images, and rerun."
    raise TrainingDiverged(f"{run_dir}: training diverged: {what} at epoch {epoch + 1}, step {step}{ids}. {kept}")


def _bar(items, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="batch", leave=False, disable=None)
