"""Open a trained run folder for inference: its config, its model with a checkpoint loaded, and batches.

:func:`load_model` needs only the run folder (config.json + checkpoint), not the table the run was trained
on, so `mvmammo predict` works on a machine that never saw the training data; :func:`open_run` adds the
run's own window cache for `evaluate`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from mvmammo import config as config_mod
from mvmammo.config import Config
from mvmammo.data.cache import WindowCache
from mvmammo.errors import MvError
from mvmammo.models.registry import build_model
from mvmammo.training import checkpoint as ckpt
from mvmammo.training.inputs import BatchMaker, maker_for, pick_device, prepare_cache

CHECKPOINTS = ("best", "last")


class RunError(MvError):
    """A run folder cannot be used (missing, no config, no checkpoint, not evaluated); names the run and the fix."""


@dataclass
class LoadedModel:
    run_dir: Path
    cfg: Config
    model: torch.nn.Module
    in_channels: int  # 1 (image) or 3 (image + benign + malignant heatmaps), from the checkpoint's weights
    device: torch.device


@dataclass
class OpenRun:
    run_dir: Path
    cfg: Config
    model: torch.nn.Module
    cache: WindowCache
    maker: BatchMaker
    device: torch.device


def run_config(run_dir: str | Path) -> Config:
    """config.json of a run folder; one-line RunError when the folder or the file is missing or unreadable."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run folder; give a folder written by `mvmammo train`")
    path = run_dir / "config.json"
    if not path.is_file():
        raise RunError(f"{run_dir}: not a run folder (no config.json); give a folder written by `mvmammo train`")
    try:
        return config_mod.load(path)
    except (OSError, ValueError, TypeError, KeyError, json.JSONDecodeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RunError(f"{path}: unreadable run config ({first}); restore it or retrain the run") from None


def checkpoint_path(run_dir: str | Path, checkpoint: str = "best") -> Path:
    if checkpoint not in CHECKPOINTS:
        raise RunError(f"unknown checkpoint {checkpoint!r}; use best or last")
    path = Path(run_dir) / f"{checkpoint}.pt"
    if not path.is_file():
        other = "last" if checkpoint == "best" else "best"
        hint = f" or pass --checkpoint {other}" if (Path(run_dir) / f"{other}.pt").is_file() else ""
        raise RunError(f"{run_dir}: no {checkpoint}.pt checkpoint; train the run first (mvmammo train ...){hint}")
    return path


def state_in_channels(state: dict) -> int:
    """Input channels of a model's first convolution, read from its weights (the first 4-D tensor)."""
    for value in state.values():
        if hasattr(value, "dim") and value.dim() == 4:
            return int(value.shape[1])  # conv weight (out, in, kh, kw)
    raise ValueError("no convolution weights in the checkpoint")


def load_model(run_dir: str | Path, checkpoint: str = "best", device: str | None = None) -> LoadedModel:
    """The run's model with ``<checkpoint>.pt`` loaded, on ``device`` (default: the run's), in eval mode.

    The input channel count comes from the checkpoint itself, so a run trained from a prebuilt cache
    (data.cache) whose channels differ from data.heatmaps still loads.
    """
    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    path = checkpoint_path(run_dir, checkpoint)
    try:
        state = ckpt.load(path)["model"]
    except MvError:
        raise
    except Exception as exc:  # an older checkpoint.load raises torch's own errors
        raise RunError(f"{path}: not a readable checkpoint ({type(exc).__name__}); restore it or retrain") from None
    try:
        channels = state_in_channels(state)
        model = build_model(cfg.model, in_channels=channels)
        ckpt.load_model_state(model, state)
    except MvError:
        raise
    except (ValueError, RuntimeError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RunError(f"{path}: weights do not fit the model in {run_dir}/config.json ({first})") from None
    dev = pick_device(device or cfg.run.device)
    model.to(dev).eval()
    return LoadedModel(run_dir, cfg, model, channels, dev)


def open_run(run_dir: str | Path, checkpoint: str = "best", device: str | None = None,
             progress: bool = False) -> OpenRun:
    """The loaded model plus the run's own window cache and batch maker (the training input path)."""
    lm = load_model(run_dir, checkpoint, device)
    cache = prepare_cache(lm.cfg, progress=progress)
    if cache.spec.channels != lm.in_channels:
        raise RunError(f"{run_dir}: the checkpoint reads {lm.in_channels} input channel(s) but the run's window "
                       f"cache {cache.root} holds {cache.spec.channels}; set data.heatmaps / data.cache to match the "
                       "training")
    maker = maker_for(lm.cfg, cache, lm.device)  # the same input path (fast-path switches) as training
    return OpenRun(lm.run_dir, lm.cfg, lm.model, cache, maker, lm.device)
