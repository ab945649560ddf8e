"""A method's state at the end of an epoch, kept in the run folder so a resumed run continues exactly.

The loop checkpoints (last.pt) only the model, the optimizer and the RNG; state a method accumulates over
epochs (PMR's EMA prototypes, QMF's per-breast loss history) would otherwise restart from nothing at a resume.
A method saves it at every epoch end as ``<name>_state_e<epoch>.npz`` (arrays only: loading runs no code,
np.load(allow_pickle=False)) and, on a resume after epoch e, loads ``_e<e>``. The file of the epoch before is
kept too: a kill after the method's epoch-e file but before last.pt of epoch e resumes after epoch e - 1, and
then needs that one. Older files are removed. Under torchrun every rank keeps its own file (suffix -r<rank>),
since some state (QMF's history) depends on the rank's rows.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mvmammo.atomic import replace_atomic


def _rank_suffix() -> str:
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        return f"-r{torch.distributed.get_rank()}"
    return ""


def state_path(run_dir: str | Path, name: str, epoch: int) -> Path:
    return Path(run_dir) / f"{name}_state_e{int(epoch)}{_rank_suffix()}.npz"


def save_epoch_state(run_dir: str | Path, name: str, epoch: int, arrays: dict[str, np.ndarray]) -> Path:
    """Write the arrays atomically as the state after ``epoch``; drop files older than epoch - 1."""
    path = state_path(run_dir, name, epoch)
    replace_atomic(path, lambda f: np.savez(f, **arrays))
    for old in Path(run_dir).glob(f"{name}_state_e*{_rank_suffix()}.npz"):
        try:
            e = int(old.stem.split("_state_e")[1].split("-r")[0])
        except (IndexError, ValueError):
            continue
        if e < epoch - 1:
            old.unlink(missing_ok=True)
    return path


def load_epoch_state(run_dir: str | Path, name: str, epoch: int) -> dict[str, np.ndarray] | None:
    """The arrays saved after ``epoch``, or None where there is no such file (or it cannot be read)."""
    path = state_path(run_dir, name, epoch)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError):
        return None
