"""TensorBoard event files for a run (run.tensorboard=true): RUN/tensorboard/.

The hook exports what the run itself records, so TensorBoard and metrics.jsonl can never disagree: every
numeric field of every step and epoch line of metrics.jsonl (losses, AUCs, gradient norms, learning rates,
whatever hooks add) as ``step/<key>`` and ``epoch/<key>``, and every chord of lca.jsonl (LCA per group, its
error) as ``lca/<key>``; the x axis is the optimizer step throughout. The training loop writes its lines
after each epoch, so the hook forwards new complete lines as they appear (checked after each step: one
os.stat, no device synchronisation) and the rest at the end. It reads files only: training is unchanged.

A resumed run re-exports from the start with ``purge_step=0``, so TensorBoard drops the events of the
interrupted process (which may have recorded epochs that the resume recomputes).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from mvmammo.errors import MvError

SKIP = ("kind", "epoch", "step")  # axes, not values


class TensorBoardMissing(MvError):
    """run.tensorboard=true without the tensorboard package."""


def summary_writer_class():
    """torch's SummaryWriter, or a one-line error saying how to install what it needs."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TensorBoardMissing("run.tensorboard=true needs the tensorboard package: pip install tensorboard "
                                 "(or mvmammo[tensorboard]), or set run.tensorboard=false") from None
    return SummaryWriter


class _Tail:
    """New complete lines of a JSON-lines file since the last call (a torn last line waits for its end)."""

    def __init__(self, path: Path):
        self.path, self.offset, self.size = path, 0, -1

    def grown(self) -> bool:
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return False
        return size != self.size

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.size = self.offset + len(data)
        end = data.rfind(b"\n") + 1  # only whole lines; the rest is read again next time
        self.offset += end
        out = []
        for raw in data[:end].splitlines():
            try:
                obj = json.loads(raw)
            except ValueError:
                continue  # a line torn by an earlier kill (the loop drops those on resume)
            if isinstance(obj, dict):
                out.append(obj)
        return out


def _scalars(record: dict, skip=SKIP):
    for k, v in record.items():
        if k in skip or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            continue
        yield k, float(v)


class TensorBoardHook:
    """Training hook (see mvmammo.training.loop): mirrors metrics.jsonl and lca.jsonl into event files."""

    def __init__(self, folder_name: str = "tensorboard"):
        self.writer_class = summary_writer_class()  # fail before training starts, not after an epoch
        self.folder_name = folder_name
        self.writer = None

    def on_train_start(self, ctx) -> None:
        if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 writes the run folder
            return
        run_dir = Path(ctx.run_dir)
        resumed = ctx.step > 0
        self.writer = self.writer_class(log_dir=str(run_dir / self.folder_name), purge_step=0 if resumed else None)
        self.metrics = _Tail(run_dir / "metrics.jsonl")
        self.lca = _Tail(run_dir / "lca.jsonl")
        self._export()

    def _export(self) -> None:
        for rec in self.metrics.read():
            kind = rec.get("kind", "step")
            step = int(rec.get("step", 0))
            for k, v in _scalars(rec):
                self.writer.add_scalar(f"{kind}/{k}", v, step)
        for rec in self.lca.read():
            step = int(rec.get("step_b", 0))
            for k, v in _scalars(rec, SKIP + ("step_a", "step_b")):
                self.writer.add_scalar(f"lca/{k}", v, step)

    def after_step(self, ctx) -> dict:
        if self.writer is not None and (self.metrics.grown() or self.lca.grown()):
            self._export()
            self.writer.flush()
        return {}

    def on_epoch_end(self, ctx) -> dict:
        if self.writer is not None and self.lca.grown():  # chords closed at the epoch's end
            self._export()
        return {}

    def on_train_end(self, ctx) -> None:
        if self.writer is None:
            return
        self._export()
        self.writer.close()
        self.writer = None


def hooks_for(cfg) -> list:
    """The hooks run.tensorboard asks for (empty when off)."""
    return [TensorBoardHook()] if cfg.run.tensorboard else []
