"""Training methods, one file each, registered by name (base.py says what a method may change).

``build_methods(cfg)`` gives the loop one :class:`MethodSet`: the paper's regularizers that cfg.reg switches on,
then the later method of ``reg.method``. Every module of this package is imported here, so a new method file
registers itself by being there (as model families do in models/).
"""
from __future__ import annotations

import importlib
import pkgutil

import torch

from mvmammo.config import Config
from mvmammo.method_config import LATER_METHODS
from mvmammo.training.methods.base import METHODS, Method, register_method

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")

PAPER_METHODS = ("pretrain", "moddrop", "blend")  # switched on by their own reg.* fields; combinable


class MethodSet:
    """The active methods of a run, composed for the loop: view masks multiply, hooks concatenate, and at
    most one method replaces the loss and at most one the backward pass."""

    def __init__(self, cfg: Config, methods: list[Method], task):
        self.cfg, self.methods, self.task = cfg, methods, task
        self._loss = next((m for m in methods if m.loss is not None), None)
        self._backward = next((m for m in methods if m.backward is not None), None)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.methods]

    def prepare_model(self, model: torch.nn.Module) -> None:
        for m in self.methods:
            m.prepare_model(model)

    def training_rows(self, cache, rows):
        for m in self.methods:
            rows = m.training_rows(cache, rows)
        return rows

    def hooks(self) -> list:
        return [h for m in self.methods for h in m.hooks()]

    def view_mask(self, ctx, n: int, generator: torch.Generator, device: torch.device):
        mask = weight = None
        for m in self.methods:
            mk, w = m.view_mask(ctx, n, generator, device)
            if mk is not None:
                mask = mk if mask is None else mask * mk
            if w is not None:
                weight = w if weight is None else weight * w
        return mask, weight

    def state_dict(self) -> dict:
        """{method name: its state} for the methods that keep any (stored in last.pt)."""
        return {m.name: s for m in self.methods if (s := m.state_dict())}

    def load_state_dict(self, state: dict) -> None:
        for m in self.methods:
            if m.name in state:
                m.load_state_dict(state[m.name])

    def loss(self, out: dict, batch: dict, ctx) -> dict:
        if self._loss is not None:
            return self._loss.loss(out, batch, ctx)
        return self.task(out, batch, self.cfg)

    def backward(self, losses: dict, ctx) -> None:
        if self._backward is not None:
            self._backward.backward(losses, ctx)
        else:
            losses["loss"].backward()


def method_problems(cfg: Config) -> list[str]:
    """Config problems of the methods (reg.method unknown, two methods replacing the loss, a method's own)."""
    out = []
    if cfg.reg.method not in LATER_METHODS or (cfg.reg.method != "none" and cfg.reg.method not in METHODS):
        known = [n for n in LATER_METHODS if n == "none" or n in METHODS]
        out.append(f"reg.method={cfg.reg.method!r}: unknown; one of {', '.join(known)}")
        return out
    active = [cls for cls in METHODS.values() if cls.active(cfg)]
    for cls in active:
        out.extend(cls.problems(cfg))
    for what in ("loss", "backward"):
        owners = [cls.name for cls in active if getattr(cls, what) is not None]
        if len(owners) > 1:
            out.append(f"{' and '.join(owners)} both replace the {what}: combine reg.method={cfg.reg.method} with "
                       "plain training, pretraining or modality dropout only")
    return out


def build_methods(cfg: Config, task) -> MethodSet:
    """The active methods of ``cfg`` (paper's first, in PAPER_METHODS order, then reg.method)."""
    order = [n for n in PAPER_METHODS if n in METHODS] + [n for n in METHODS if n not in PAPER_METHODS]
    return MethodSet(cfg, [METHODS[n](cfg) for n in order if METHODS[n].active(cfg)], task)


__all__ = ["METHODS", "Method", "MethodSet", "PAPER_METHODS", "build_methods", "method_problems", "register_method"]
