"""The model families: uni-view (CC or MLO), Joint, Shared and Split ResNets (SPEC section 3).

Every family is a :class:`MultiViewModel` and shares one interface (analyses and regularizers use only this):
  - ``views``: the views it reads, ("cc",), ("mlo",) or ("cc", "mlo");
  - ``encode(cc, mlo) -> {h_cc, h_mlo, pooled_cc, pooled_mlo}`` for its views: h_v (B, fc_dim) after the
    per-view FC+ReLU, pooled_v (B, column channels) after global average pooling;
  - ``fuse(h_cc, h_mlo) -> {logits, logits_cc, logits_mlo}``, all (B, 2) for (benign, malignant);
  - ``forward(cc, mlo, view_mask=None)``: encode, multiply h_cc by view_mask[:, 0] and h_mlo by
    view_mask[:, 1] (modality dropout and view-ablation pass this), fuse. The returned h_cc/h_mlo are the
    features *as fused* (after the mask), so ``fuse(out["h_cc"], out["h_mlo"])`` reproduces the logits.
    With ``aux_heads`` it also returns ``aux_logits_cc``/``aux_logits_mlo`` from the (unmasked) pooled
    features. Keys of a view the model does not read are absent, not None.
  - ``view_logits(out) -> (u_cc, u_mlo)``: each view's stand-alone logits (the head applied to that view
    alone); with ``model.fusion_gate`` entropy or energy, ``logits`` in eval mode is the gated combination of
    these (models/gates.py; MLA's and QMF's inference rules) and ``logits_sum`` the family's own fusion.

Input noise (training mode only) is added to each view's input inside ``encode``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .backbones import build_backbone
from .gates import gated_logits
from .heads import N_OUTPUTS, AuxHead, GaussianNoise, ViewFC, global_avg_pool, mean_probability_logit, sum_fusion
from .registry import register_model

VIEWS = ("cc", "mlo")  # the column order of view_mask


class MultiViewModel(nn.Module):
    views: tuple[str, ...] = VIEWS

    def __init__(self, cfg: ModelConfig, in_channels: int):
        super().__init__()
        self.cfg = cfg
        self.in_channels = in_channels
        self.noise = GaussianNoise(cfg.input_noise_std)  # no parameters: outside the naming rule
        self.aux_heads = cfg.aux_heads

    # --- building blocks a family provides ---
    def _new_column(self) -> nn.Module:
        return build_backbone(self.cfg.backbone, self.in_channels, self.cfg.width)

    def column(self, view: str) -> nn.Module:
        raise NotImplementedError

    def view_fc(self, view: str) -> nn.Module:
        return getattr(self, view)["fc"]

    def _add_aux_heads(self, feat_dim: int) -> None:
        if self.aux_heads:
            for v in self.views:
                setattr(self, f"aux_{v}", AuxHead(feat_dim, self.cfg.fc_dim))

    # --- the common interface ---
    def encode(self, cc: torch.Tensor | None = None, mlo: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        inputs = {"cc": cc, "mlo": mlo}
        out: dict[str, torch.Tensor] = {}
        for v in self.views:
            x = inputs[v]
            if x is None:
                raise ValueError(f"{type(self).__name__} reads the {v.upper()} view but got {v}=None")
            fmap = self.column(v)(self.noise(x))  # (B, 16w, ~H/64, ~W/64) for ResNet-22
            pooled = global_avg_pool(fmap)        # (B, 16w)
            out[f"pooled_{v}"] = pooled
            out[f"h_{v}"] = self.view_fc(v)(pooled)  # (B, fc_dim)
        return out

    def fuse(self, h_cc: torch.Tensor | None = None, h_mlo: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, cc: torch.Tensor | None = None, mlo: torch.Tensor | None = None,
                view_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        enc = self.encode(cc, mlo)
        h = {v: enc[f"h_{v}"] for v in self.views}
        if view_mask is not None:
            batch = next(iter(h.values())).shape[0]
            if view_mask.shape != (batch, len(VIEWS)):
                raise ValueError(f"view_mask must be (B, 2) = ({batch}, 2) for (cc, mlo), got {tuple(view_mask.shape)}")
            for v in h:
                i = VIEWS.index(v)
                h[v] = h[v] * view_mask[:, i:i + 1].to(h[v].dtype)  # (B, fc_dim) * (B, 1)
        out = self.fuse(**{f"h_{v}": h[v] for v in h})
        out.update({f"h_{v}": h[v] for v in h})
        if self.aux_heads:
            for v in self.views:
                out[f"aux_logits_{v}"] = getattr(self, f"aux_{v}")(enc[f"pooled_{v}"])  # (B, 2)
        if not self.training:
            self.apply_gate(out)
        return out

    def apply_gate(self, out: dict) -> dict:
        """Inference rule of model.fusion_gate, in place: ``logits`` becomes the gated combination of the two
        views' stand-alone logits (``logits_sum`` keeps the family's own fusion). Analyses that fuse given
        features (``fuse`` on ablated h) call this too, so they score what predict scores."""
        gate = getattr(self.cfg, "fusion_gate", "none")
        if gate not in ("none", "auto") and len(self.views) == 2:
            out["logits_sum"] = out["logits"]
            out["logits"] = gated_logits(gate, *self.view_logits(out))
        return out

    def view_logits(self, out: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(u_cc, u_mlo), each (B, 2): the logits of each view alone. Sum fusion splits the bias in half
        between logits_cc and logits_mlo; a view alone gets the whole bias, W h_v + b."""
        bias = self.shared["head"].bias
        half = bias / 2 if bias is not None else 0.0
        return out["logits_cc"] + half, out["logits_mlo"] + half


def _view_part(column: nn.Module | None, fc_in: int, fc_dim: int, head: bool) -> nn.ModuleDict:
    """One view's modules: optionally its column, its FC, optionally its own output layer."""
    parts: dict[str, nn.Module] = {}
    if column is not None:
        parts["column"] = column
    parts["fc"] = ViewFC(fc_in, fc_dim)
    if head:
        parts["head"] = nn.Linear(fc_dim, N_OUTPUTS)
    return nn.ModuleDict(parts)


class UniViewModel(MultiViewModel):
    """Column + FC + output layer for one view; all parameters under that view's prefix."""

    def __init__(self, cfg: ModelConfig, in_channels: int, view: str):
        super().__init__(cfg, in_channels)
        self.views = (view,)
        column = self._new_column()
        setattr(self, view, _view_part(column, column.out_channels, cfg.fc_dim, head=True))
        self._add_aux_heads(column.out_channels)

    def column(self, view: str) -> nn.Module:
        return getattr(self, view)["column"]

    def fuse(self, h_cc=None, h_mlo=None):
        (v,) = self.views
        h = h_cc if v == "cc" else h_mlo
        if h is None:
            raise ValueError(f"uni-view {v.upper()} model needs h_{v}")
        logits = getattr(self, v)["head"](h)  # (B, 2)
        return {"logits": logits, f"logits_{v}": logits}


@register_model("uni_cc")
class UniCC(UniViewModel):
    def __init__(self, cfg: ModelConfig, in_channels: int):
        super().__init__(cfg, in_channels, "cc")


@register_model("uni_mlo")
class UniMLO(UniViewModel):
    def __init__(self, cfg: ModelConfig, in_channels: int):
        super().__init__(cfg, in_channels, "mlo")


@register_model("joint")
class JointResNet(MultiViewModel):
    """Separate columns and FCs per view; sum fusion h_cc + h_mlo; one shared output layer."""

    def __init__(self, cfg: ModelConfig, in_channels: int):
        super().__init__(cfg, in_channels)
        col_cc, col_mlo = self._new_column(), self._new_column()
        self.cc = _view_part(col_cc, col_cc.out_channels, cfg.fc_dim, head=False)
        self.mlo = _view_part(col_mlo, col_mlo.out_channels, cfg.fc_dim, head=False)
        self.shared = nn.ModuleDict({"head": nn.Linear(cfg.fc_dim, N_OUTPUTS)})
        self._add_aux_heads(col_cc.out_channels)

    def column(self, view: str) -> nn.Module:
        return getattr(self, view)["column"]

    def fuse(self, h_cc=None, h_mlo=None):
        if h_cc is None or h_mlo is None:
            raise ValueError("sum fusion needs both h_cc and h_mlo (pass zeros or the training mean to ablate)")
        return sum_fusion(self.shared["head"], h_cc, h_mlo)


@register_model("shared")
class SharedResNet(JointResNet):
    """One column for both views (run on each view separately, so BatchNorm sees one view's batch at a
    time, as in the reference); the per-view FCs stay separate; fusion as Joint."""

    def __init__(self, cfg: ModelConfig, in_channels: int):
        MultiViewModel.__init__(self, cfg, in_channels)
        column = self._new_column()
        self.cc = _view_part(None, column.out_channels, cfg.fc_dim, head=False)
        self.mlo = _view_part(None, column.out_channels, cfg.fc_dim, head=False)
        self.shared = nn.ModuleDict({"column": column, "head": nn.Linear(cfg.fc_dim, N_OUTPUTS)})
        self._add_aux_heads(column.out_channels)

    def column(self, view: str) -> nn.Module:
        return self.shared["column"]


@register_model("split")
class SplitResNet(MultiViewModel):
    """Two uni-view models trained together; the loss is on the average of their predicted probabilities.

    ``logits`` = logit(mean(sigmoid(logits_cc), sigmoid(logits_mlo))), so BCE-with-logits on ``logits`` is
    exactly BCE on the averaged probability; ``logits_cc``/``logits_mlo`` are each uni-view model's own.
    """

    def __init__(self, cfg: ModelConfig, in_channels: int):
        super().__init__(cfg, in_channels)
        col_cc, col_mlo = self._new_column(), self._new_column()
        self.cc = _view_part(col_cc, col_cc.out_channels, cfg.fc_dim, head=True)
        self.mlo = _view_part(col_mlo, col_mlo.out_channels, cfg.fc_dim, head=True)
        self._add_aux_heads(col_cc.out_channels)

    def column(self, view: str) -> nn.Module:
        return getattr(self, view)["column"]

    def fuse(self, h_cc=None, h_mlo=None):
        if h_cc is None or h_mlo is None:
            raise ValueError("the Split model needs both h_cc and h_mlo")
        logits_cc = self.cc["head"](h_cc)     # (B, 2)
        logits_mlo = self.mlo["head"](h_mlo)  # (B, 2)
        return {"logits": mean_probability_logit(logits_cc, logits_mlo),
                "logits_cc": logits_cc, "logits_mlo": logits_mlo}

    def view_logits(self, out: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return out["logits_cc"], out["logits_mlo"]  # each view's own head
