"""Checkpoints: best.pt (model only, selected by validation malignant AUC) and last.pt (everything needed
for exact resume: model, optimizer, epoch, step, best score, RNG states). Writes are atomic (temp + rename)
so a kill or a full disk never leaves a half-written checkpoint in place of a good one.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: dict, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(f"{path}: could not write checkpoint ({exc}); free disk space and rerun the same "
                      f"command: the run resumes from the last complete checkpoint") from exc


def model_state(model: torch.nn.Module) -> dict:
    # torch.compile wraps the module; keep checkpoint keys free of the wrapper prefix.
    target = getattr(model, "_orig_mod", model)
    return target.state_dict()


def load_model_state(model: torch.nn.Module, state: dict, strict: bool = True) -> None:
    target = getattr(model, "_orig_mod", model)
    target.load_state_dict(state, strict=strict)


def load(path: str | Path, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=False)
