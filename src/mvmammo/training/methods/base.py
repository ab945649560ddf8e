"""What a training method is to the one loop, and the registry of methods by name.

A method changes one or more of these steps of the loop (training/loop.py), and nothing else:

  prepare_model(model)              before the model moves to the device (load columns, freeze, add state)
  training_rows(cache, rows)        the rows the loop trains on
  hooks()                           loop hooks (on_train_start, after_backward, after_step, on_epoch_end, ...):
                                    gradient modulation goes in after_backward, before the optimizer step
  view_mask(ctx, n, generator, device) -> (mask (n, 2) | None, sample weight (n,) | None)
                                    a per-sample (cc, mlo) multiplier of the view features before fusion
  loss(out, batch, ctx) -> dict     the loss dict ({"loss", "loss_benign", "loss_malignant", ...}); None = the
                                    config's task (training/tasks.py)
  backward(losses, ctx)             fills .grad; None = losses["loss"].backward()
  state_dict() / load_state_dict(d) state carried across epochs (tensors, numbers, lists, dicts of them): saved
                                    in last.pt at every epoch end and given back on resume, so a resumed run
                                    continues exactly (checkpoints load with weights_only=True: no objects)

The paper's regularizers (pretraining, modality dropout, gradient blending) are methods that are switched on by
their own reg.* fields and can be combined; ``reg.method=NAME`` adds at most one of the later methods
(method_config.py). Two methods that both replace the loss, or both the backward pass, cannot be combined: the
config check says so before anything is written.
"""
from __future__ import annotations

from typing import Callable

import torch

from mvmammo.config import Config


class Method:
    """A method that changes nothing; subclasses override what they need."""

    name = ""
    loss: Callable | None = None  # (out, batch, ctx) -> dict
    backward: Callable | None = None  # (losses, ctx) -> None

    def __init__(self, cfg: Config):
        self.cfg = cfg

    @classmethod
    def active(cls, cfg: Config) -> bool:
        """Whether ``cfg`` switches this method on (later methods: reg.method names it)."""
        return cfg.reg.method == cls.name

    @classmethod
    def problems(cls, cfg: Config) -> list[str]:
        """What is wrong with ``cfg`` for this method, as 'key=value: what to do' phrases (checked before any write)."""
        return []

    def prepare_model(self, model: torch.nn.Module) -> None:
        pass

    def training_rows(self, cache, rows):
        return rows

    def hooks(self) -> list:
        return []

    def view_mask(self, ctx, n: int, generator: torch.Generator, device: torch.device):
        return None, None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


METHODS: dict[str, type[Method]] = {}


def register_method(name: str):
    def wrap(cls: type[Method]) -> type[Method]:
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap
