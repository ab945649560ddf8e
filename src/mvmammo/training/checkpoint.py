"""Checkpoints: best.pt (model only, selected by validation malignant AUC) and last.pt (everything needed
for exact resume: model, optimizer, epoch, step, best score, RNG states).

Checkpoints are data, never code: every load goes through :func:`load`, which uses ``torch.load(...,
weights_only=True)``. A file that asks the unpickler for anything beyond tensors and plain containers (a pickle
payload, a custom class) is refused with one line; nothing in it runs. To keep last.pt loadable that way the RNG
states are stored as tensors and plain containers (numpy's state as an int64 tensor, Python's as a tuple of ints).

Writes are atomic (temp + rename in the same folder) so a kill or a full disk never leaves a half-written
checkpoint in place of a good one, and a failed write leaves no temp file behind.
"""
from __future__ import annotations

import errno
import io
import os
import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import torch

from mvmammo.errors import MvError


class CheckpointError(MvError):
    """A checkpoint cannot be read or written; the message names the file and what to do."""


def rng_state() -> dict:
    """All RNG states as tensors and plain containers (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    st = state["numpy"]
    if isinstance(st, dict):
        np.random.set_state((st["name"], st["keys"].numpy().astype(np.uint32), st["pos"], st["has_gauss"],
                             st["cached_gaussian"]))
    else:  # last.pt written before the RNG state was plain data: numpy's own tuple
        np.random.set_state(st)
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _free_hint(path: Path) -> str:
    try:
        st = os.statvfs(path.parent)
        return f" ({st.f_bavail * st.f_frsize / 2**20:.1f} MiB free there)"
    except OSError:
        return ""


def save_atomic(obj: dict, path: str | Path) -> None:
    """torch.save to ``path`` via a temp file in the same folder; on failure the old file stays, no temp left."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    # Serialise in memory first (tens of MB at most), then write the bytes with plain file writes: a full disk
    # is then an OSError(ENOSPC) from write(), not an opaque error from torch's zip writer mid-stream.
    buf = io.BytesIO()
    torch.save(obj, buf)
    try:
        with open(tmp, "wb") as f:
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        tmp.unlink(missing_ok=True)
        full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "write failed" in str(exc)
        need = f", {buf.getbuffer().nbytes / 2**20:.1f} MiB needed"
        what = f"the disk is full ({_free_hint(path).strip(' ()') or 'no space'}{need}); free space there" \
            if full else f"{exc}; fix the cause"
        raise CheckpointError(f"{path}: could not write checkpoint: {what} and rerun the same command (the run "
                              "resumes from its last complete checkpoint, which is kept)") from exc


def model_state(model: torch.nn.Module) -> dict:
    # torch.compile wraps the module; keep checkpoint keys free of the wrapper prefix.
    target = getattr(model, "_orig_mod", model)
    return target.state_dict()


def load_model_state(model: torch.nn.Module, state: dict, strict: bool = True, path: str | Path = "") -> None:
    target = getattr(model, "_orig_mod", model)
    try:
        target.load_state_dict(state, strict=strict)
    except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path or 'checkpoint'}: weights do not fit this model ({first}); the checkpoint "
                              "belongs to another model family, width or channel count") from exc


def _legacy_numpy_globals() -> list:
    """numpy's array reconstruction, allowed so last.pt files written before RNG states were tensors still load.

    These rebuild an ndarray from its dtype and bytes; they call nothing else (torch's own docs list them as
    safe for weights_only loading).
    """
    out = [np.ndarray, np.dtype]
    core = getattr(np, "_core", None) or np.core
    out.append(core.multiarray._reconstruct)
    for name in ("UInt32DType", "Int64DType", "Float64DType"):
        dt = getattr(getattr(np, "dtypes", None), name, None)
        if dt is not None:
            out.append(dt)
    return out


def load(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint's contents as tensors and plain containers; refuses (one line) anything that would run code."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint; train the run first (mvmammo train ...) or check the path")
    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = str(exc).strip().splitlines()
        hint = next((ln.strip() for ln in detail if "GLOBAL" in ln or "Unsupported" in ln), "")
        raise CheckpointError(f"{path}: refused: this checkpoint holds more than tensors and plain data "
                              f"({hint or 'it asks the unpickler to build objects'}); mvmammo never runs code from a "
                              "checkpoint. Use a checkpoint written by mvmammo, or re-save its state dict") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        first = (str(exc).strip().splitlines() or ["truncated"])[0].split(". ")[0]
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {first}); it is damaged "
                              "or not a checkpoint: restore it or rerun training") from None
    if not isinstance(obj, dict) or "model" not in obj:
        raise CheckpointError(f"{path}: not an mvmammo checkpoint (no 'model' entry)")
    return obj
