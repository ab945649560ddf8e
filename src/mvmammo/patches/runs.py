"""A patch classifier's checkpoint: what `patches train` and `weights import-nyu` write, `heatmaps` reads.

``best.pt`` / ``last.pt`` hold ``{"model": state dict, "arch": DenseNetConfig as a dict, "patch": px,
"classes": [...]}`` (plus optimizer/RNG state in last.pt), all tensors and plain data, loadable with
``weights_only=True``; :func:`mvmammo.heatmaps.infer.load_patch_model` rebuilds the model from ``arch``.
"""
from __future__ import annotations

from pathlib import Path

from mvmammo.training.checkpoint import model_state, save_atomic

CLASSES = ("malignant", "benign", "outside", "negative")   # NYU's class indices 0..3


def checkpoint(model, patch: int, **extra) -> dict:
    return {"model": model_state(model), "arch": model.cfg.to_dict(), "patch": int(patch),
            "classes": list(CLASSES), **extra}


def write_model(run_dir: str | Path, model, patch: int, name: str = "best", **extra) -> Path:
    """Save ``model`` as ``run_dir/<name>.pt`` (atomic)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"{name}.pt"
    save_atomic(checkpoint(model, patch, **extra), path)
    return path
