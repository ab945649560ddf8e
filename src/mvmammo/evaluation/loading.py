"""Open a trained run folder for inference: its config, its model with a checkpoint loaded, and batches."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mvmammo import config as config_mod
from mvmammo.config import Config
from mvmammo.data.cache import WindowCache
from mvmammo.models.registry import build_model
from mvmammo.training import checkpoint as ckpt
from mvmammo.training.inputs import BatchMaker, maker_for, pick_device, prepare_cache


@dataclass
class OpenRun:
    run_dir: Path
    cfg: Config
    model: torch.nn.Module
    cache: WindowCache
    maker: BatchMaker
    device: torch.device


def open_run(run_dir: str | Path, checkpoint: str = "best", device: str | None = None,
             progress: bool = False) -> OpenRun:
    """The run's model with ``<checkpoint>.pt`` loaded, on ``device`` (default: the run's), in eval mode."""
    run_dir = Path(run_dir)
    cfg = config_mod.load(run_dir / "config.json")
    dev = pick_device(device or cfg.run.device)
    cache = prepare_cache(cfg, progress=progress)
    model = build_model(cfg.model, in_channels=cache.spec.channels)
    path = run_dir / f"{checkpoint}.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint; train the run first (mvmammo train ...)")
    ckpt.load_model_state(model, ckpt.load(path)["model"])
    model.to(dev).eval()
    maker = maker_for(cfg, cache, dev)  # the same input path (fast-path switches) as training
    return OpenRun(run_dir, cfg, model, cache, maker, dev)
