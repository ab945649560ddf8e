"""Pretraining (SPEC section 4): initialise a multiview model from two uni-view runs, then fine-tune all of
it or only its output layer(s).

``reg.pretrained_cc`` / ``reg.pretrained_mlo`` name run folders; their ``best.pt`` (selected by validation
malignant AUC, as the paper's "best performing uni-view models") supplies, by parameter name:
  - ``<view>.column.*`` and ``<view>.fc.*`` (and BatchNorm buffers) of that view;
  - ``<view>.head.*`` where the target has per-view output layers (uni-view, Split); the fused
    ``shared.head`` of Joint/Shared has no uni-view counterpart and keeps its random initialisation;
  - Shared family: its one column ``shared.column.*`` comes from the CC run (the better view in the paper;
    two separately trained columns cannot be merged), or from the MLO run when only that is given; both
    view FCs come from their own runs;
  - gradient blending heads ``aux_<view>.fc/head`` start as the uni-view model's FC and output layer, so
    each auxiliary head begins as the whole pretrained uni-view model.
A source may also be a Shared run (its column is read from ``shared.column.*``).

``reg.finetune=head`` freezes everything but the output layers (``*.head.*`` and the auxiliary heads):
requires_grad is switched off, so build_optimizer leaves those parameters out of Adam, and the frozen
BatchNorm layers stay in eval mode (their running statistics are part of the pretrained columns and
must not drift either), so the frozen columns compute exactly what they computed at the start. The eval
mode is enforced by the model's own forward (:func:`freeze_batchnorm`), so it holds under torchrun too,
where BatchNorm layers are replaced by their global-batch versions after this point.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from mvmammo.config import Config
from mvmammo.training import checkpoint as ckpt
from mvmammo.training.methods.base import Method, register_method

VIEWS = ("cc", "mlo")


class PretrainError(ValueError):
    """A pretrained run folder that cannot initialise this model; the message says why and what to do."""


def _source_state(run: str, view: str) -> dict[str, torch.Tensor]:
    path = Path(run) / "best.pt"
    if not path.exists():
        raise PretrainError(f"reg.pretrained_{view}={run}: no best.pt in that folder; train the uni-view run "
                            f"first (mvmammo train model.family=uni_{view} run.out={run}) or fix the path")
    return ckpt.load(path, map_location="cpu")["model"]


def _describe(run: str) -> str:
    """The model settings of a run folder, for error messages."""
    try:
        m = json.loads((Path(run) / "config.json").read_text())["model"]
        return f"family={m['family']}, backbone={m['backbone']}, width={m['width']}, fc_dim={m['fc_dim']}"
    except (OSError, KeyError, ValueError):
        return "config.json unreadable"


def _mapping(target_keys: list[str], view: str, source: dict, shared_column: bool) -> dict[str, str]:
    """target key -> source key for one view's run."""
    column_src = f"{view}.column." if any(k.startswith(f"{view}.column.") for k in source) else "shared.column."
    out = {}
    for k in target_keys:
        if k.startswith(f"{view}.column.") or k.startswith(f"{view}.fc.") or k.startswith(f"{view}.head."):
            rest = k.split(".", 1)[1]
            out[k] = (column_src + rest.split(".", 1)[1]) if rest.startswith("column.") else k
        elif shared_column and k.startswith("shared.column."):
            out[k] = column_src + k[len("shared.column."):]
        elif k.startswith(f"aux_{view}.") and (f"{view}." + k.split(".", 1)[1]) in source:
            out[k] = f"{view}." + k.split(".", 1)[1]  # aux_cc.fc.weight <- cc.fc.weight
    return out


def load_pretrained(model: nn.Module, cfg: Config) -> dict[str, int]:
    """Copy the pretrained tensors into ``model`` (in place); returns tensors loaded per view."""
    target = getattr(model, "_orig_mod", model)
    state = target.state_dict()
    keys = list(state)
    runs = {"cc": cfg.reg.pretrained_cc, "mlo": cfg.reg.pretrained_mlo}
    # The Shared family's one column: from the CC run if given, else from the MLO run.
    column_view = "cc" if runs["cc"] else "mlo"
    loaded: dict[str, int] = {}
    for view in VIEWS:
        run = runs[view]
        if not run:
            continue
        if view not in getattr(target, "views", VIEWS):
            raise PretrainError(f"reg.pretrained_{view}={run}: model family {cfg.model.family!r} has no "
                                f"{view.upper()} view to initialise")
        source = _source_state(run, view)
        mapping = _mapping(keys, view, source, shared_column=(view == column_view))
        missing = [f"{t} (needs {s})" for t, s in mapping.items() if s not in source]
        if missing or not mapping:
            raise PretrainError(
                f"reg.pretrained_{view}={run}: its best.pt lacks {len(missing)} tensor(s) this "
                f"{cfg.model.family} model needs, e.g. {missing[:3]}; it should be a uni_{view} run "
                f"({_describe(run)})")
        bad = [f"{t}: {tuple(source[s].shape)} vs {tuple(state[t].shape)}" for t, s in mapping.items()
               if tuple(source[s].shape) != tuple(state[t].shape)]
        if bad:
            raise PretrainError(
                f"reg.pretrained_{view}={run}: tensor shapes do not fit ({len(bad)} mismatches, e.g. {bad[:2]}); "
                f"that run has {_describe(run)}, this one family={cfg.model.family}, "
                f"backbone={cfg.model.backbone}, width={cfg.model.width}, fc_dim={cfg.model.fc_dim}, and the "
                "input channels (data.heatmaps) must match too")
        for t, s in mapping.items():
            state[t] = source[s].to(state[t].dtype).clone()
        loaded[view] = len(mapping)
    target.load_state_dict(state)
    if cfg.run.progress:
        print("pretrained: " + ", ".join(f"{n} tensors from {runs[v]}/best.pt" for v, n in loaded.items()))
    return loaded


def is_head(name: str) -> bool:
    """Output layers: the fused head, per-view heads (uni-view, Split) and gradient blending's heads."""
    parts = name.split(".")
    return parts[0].startswith("aux_") or (len(parts) > 2 and parts[1] == "head")  # <group>.head.<tensor>


def is_frozen_batchnorm(module: nn.Module) -> bool:
    """A BatchNorm layer whose affine parameters are all frozen (requires_grad False)."""
    params = list(module.parameters(recurse=False))
    return (isinstance(module, nn.modules.batchnorm._BatchNorm) and bool(params)
            and not any(p.requires_grad for p in params))


def _pin_frozen_batchnorm(root: nn.Module, args) -> None:
    """Forward pre-hook of the model itself: frozen BatchNorm layers normalise with, and never update,
    their running statistics, whatever train() set before this forward."""
    for module in root.modules():
        if is_frozen_batchnorm(module):
            module.training = False


def freeze_batchnorm(model: nn.Module) -> int:
    """Keep every frozen BatchNorm layer of ``model`` in eval mode in all its forwards; returns their count.

    The rule lives on the model's own forward (one pre-hook, registered once) and reads the frozen flag
    from the parameters at each call, not from hooks on the BatchNorm modules: converting BatchNorm for
    DDP (SyncBatchNorm, or the CPU all-reduce version) replaces those modules but keeps the model, its
    hooks and the very parameter tensors, so the freeze survives the conversion (and any done later).
    """
    target = getattr(model, "_orig_mod", model)
    if not getattr(target, "_mv_freeze_bn", False):
        target.register_forward_pre_hook(_pin_frozen_batchnorm)
        target._mv_freeze_bn = True
    return sum(is_frozen_batchnorm(m) for m in target.modules())


def apply_finetune(model: nn.Module, cfg: Config) -> list[str]:
    """reg.finetune=head: freeze all but the output layers; returns the frozen parameter names."""
    if cfg.reg.finetune not in ("all", "head"):
        raise ValueError(f"reg.finetune={cfg.reg.finetune!r}; use all or head")
    if cfg.reg.finetune == "all":
        return []
    target = getattr(model, "_orig_mod", model)
    frozen = []
    for name, p in target.named_parameters():
        if not is_head(name):
            p.requires_grad_(False)
            frozen.append(name)
    freeze_batchnorm(target)
    return frozen


@register_method("pretrain")
class Pretrain(Method):
    """Columns (and FCs, heads where they match) from uni-view runs; reg.finetune=head trains the heads only."""

    @classmethod
    def active(cls, cfg: Config) -> bool:
        return bool(cfg.reg.pretrained_cc or cfg.reg.pretrained_mlo) or cfg.reg.finetune != "all"

    def prepare_model(self, model: nn.Module) -> None:
        if self.cfg.reg.pretrained_cc or self.cfg.reg.pretrained_mlo:
            load_pretrained(model, self.cfg)
        apply_finetune(model, self.cfg)
