"""PMR, prototypical modal rebalance (Fan et al., CVPR 2023; methods.md 4.3), for two binary labels.

As implemented (cfg.methods.pmr: alpha = 1.0, momentum = 0.2, proto_fraction = 0.1):
  - Prototypes: per view v, per label l in (benign, malignant), per class k in (0 = negative, 1 = positive), the
    centroid c_{l,k}^v of h_v (fc_dim) over the training breasts of that class: 4 prototypes per view.
  - Prototype logit: d_{l,k} = ||h_v - c_{l,k}^v||_2; PMR's prototypical softmax over the two classes of a label,
    softmax(-d_{l,0}, -d_{l,1})[1] = sigmoid(d_{l,0} - d_{l,1}), so the label's prototype logit is
    g_l^v = d_{l,0} - d_{l,1} and L_PCE^v = sum_l mean_i BCE(g_l^v, y_l) (the same per-label BCE sum as the task).
  - Scores and ratio: s_v = class-balanced mean true-class probability of g^v (view_scores.py; all-reduced under
    torchrun, so every rank switches the same term on), rho = s_cc / s_mlo.
  - Loss: L = L_task + beta_cc L_PCE^cc + beta_mlo L_PCE^mlo with only the WEAKER view's term on:
    rho > 1 (CC ahead) gives beta_cc = 0, beta_mlo = alpha; rho < 1 the reverse; rho = 1 (or no score) both 0.
  - Prototypes are recomputed from the current model in eval mode (centre windows, no augmentation) on a
    stratified proto_fraction of the training breasts, as PMR's official script does: before the first epoch
    (the initial model) and at every epoch end; the set after epoch 0 replaces the initial one, later ones are
    averaged, c <- (1 - momentum) c_new + momentum c_old.

Choices and adaptations (docs/balance.md):
  - Per-label class centroids rather than prototypes of the 4 label combinations: the task is two independent
    binary labels, so one binary prototype classifier per label mirrors the task loss exactly; the combination
    (benign and malignant) and "malignant only" are rare, so their prototypes would rest on a handful of breasts.
  - The recomputation rows are drawn per epoch from (run.seed, epoch), stratified by the 4 label combinations
    (ceil(proto_fraction * count) of each, at least 1 of any that exists), so the rare malignant breasts always
    contribute; PMR takes "the first 1/10 of the train loader". A class with no breast leaves its prototype
    undefined and its label's PCE term (and score) off. Breasts lacking a view (data.missing_view=mask) do not
    enter that view's prototypes, nor that view's PCE term during training.
  - Resume: the prototypes after each epoch go into last.pt (state_dict), so a resumed run continues with the
    same prototypes; a last.pt without them (written before this) recomputes them from the resumed model (the
    EMA history is lost) and a note says so. Under torchrun every rank computes them on the same rows (drawn
    from (seed, epoch) out of the global training rows) with the same weights and synced BatchNorm statistics;
    rank 0's are broadcast anyway, so every rank (and last.pt, written by rank 0) holds the very same ones.
  - Cost per epoch: one eval forward over proto_fraction of ALL training breasts (label-free ones included).
  - PMR's paper also adds an entropy regulariser on the dominant view; its official script does not, nor do we.
    The script's modulation window (modulation_starts/ends) has no field here: the term is on for all epochs.
  - Families: joint, shared, split (the term acts on h_v only); uni-view families are refused.
Logged: per step pmr_rho, pmr_beta_cc, pmr_beta_mlo, pmr_pce_cc, pmr_pce_mlo; per epoch pmr_proto_rows and
pmr_sep_cc / pmr_sep_mlo (mean over labels of ||c_{l,1} - c_{l,0}||).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from mvmammo.config import Config
from mvmammo.data.sampler import batches
from mvmammo.training.methods.base import Method, register_method
from mvmammo.training.methods.view_scores import (balanced_scores, broadcast_, score_ratio, true_class_probability,
                                                     two_view_problems)
from mvmammo.training.tasks import bce_pair, standard, targets

VIEWS = ("cc", "mlo")
ROW_STREAM = 7301  # SeedSequence stream of the prototype rows (distinct from the loop's streams 1 and 2)


def prototype_logits(h: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """(B, L) g_l = d_{l,0} - d_{l,1}: h (B, D), protos (L, 2, D) [label, class (neg, pos), feature]."""
    diff = h.float()[:, None, None, :] - protos.float()[None]  # (B, L, 2, D)
    d = diff.pow(2).sum(-1).clamp(min=1e-12).sqrt()  # (B, L, 2); clamp: sqrt has no gradient at 0
    return d[..., 0] - d[..., 1]


def pmr_coefficients(rho: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(beta_cc, beta_mlo): alpha on the weaker view's term only (rho = s_cc / s_mlo)."""
    return alpha * (rho < 1).float(), alpha * (rho > 1).float()


def ema(new: torch.Tensor, old: torch.Tensor | None, momentum: float, new_ok: torch.Tensor,
        old_ok: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """c = (1 - momentum) c_new + momentum c_old per prototype where both exist; else whichever exists."""
    if old is None:
        return new, new_ok
    both = (new_ok & old_ok)[..., None]
    mixed = (1 - momentum) * new + momentum * old
    out = torch.where(both, mixed, torch.where(new_ok[..., None], new, old))
    return out, new_ok | old_ok


def prototype_rows(labels: np.ndarray, rows: np.ndarray, fraction: float, seed: int, epoch: int) -> np.ndarray:
    """Sorted subset of ``rows``: ceil(fraction * n) of each (benign, malignant) combination, >= 1 where n > 0."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), ROW_STREAM]))
    combo = labels[:, 0].astype(np.int64) * 2 + labels[:, 1].astype(np.int64)
    picked = []
    for k in range(4):
        members = rows[combo == k]
        if len(members):
            take = min(len(members), max(1, math.ceil(fraction * len(members))))
            picked.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(picked)) if picked else rows[:0]


@torch.no_grad()
def class_centroids(model, maker, rows: np.ndarray, batch_size: int, precision: str = "fp32"):
    """{view: (centroids (2, 2, D), defined (2, 2) bool)} of h_v over ``rows`` (eval mode, centre windows)."""
    was_training = model.training
    model.eval()
    sums, counts = {}, {}
    try:
        for chunk in batches(np.asarray(rows), batch_size):
            batch = maker.make(chunk, train=False)
            present = batch["present"].float()  # (B, 2)
            mask = None if bool((present > 0).all()) else present
            with torch.autocast(maker.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                out = model(batch["cc"], batch["mlo"], view_mask=mask)
            y = targets(batch)  # (B, 2)
            cls = torch.stack([1 - y, y], dim=2)  # (B, L, 2) one-hot class per label
            for i, v in enumerate(VIEWS):
                w = cls * present[:, i, None, None]  # (B, L, 2)
                h = out[f"h_{v}"].float()  # (B, D)
                s = torch.einsum("blk,bd->lkd", w, h)
                sums[v] = s if v not in sums else sums[v] + s
                counts[v] = w.sum(0) if v not in counts else counts[v] + w.sum(0)
    finally:
        model.train(was_training)
    return {v: (sums[v] / counts[v].clamp(min=1)[..., None], counts[v] > 0) for v in sums}


@register_method("pmr")
class PMR(Method):
    """The task loss plus the weaker view's prototypical loss (see the module doc)."""

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.protos: dict[str, torch.Tensor] = {}  # view -> (2, 2, D)
        self.defined: dict[str, torch.Tensor] = {}  # view -> (2, 2) bool
        self.rows_used = 0
        self.log: dict = {}

    @classmethod
    def problems(cls, cfg: Config) -> list[str]:
        c, out = cfg.methods.pmr, []
        out += two_view_problems(cfg, "pmr")
        if c.alpha < 0:
            out.append(f"methods.pmr.alpha={c.alpha}: use a value >= 0")
        if not 0.0 <= c.momentum <= 1.0:
            out.append(f"methods.pmr.momentum={c.momentum}: an EMA weight, use a value in [0, 1]")
        if not 0.0 < c.proto_fraction <= 1.0:
            out.append(f"methods.pmr.proto_fraction={c.proto_fraction}: use a share in (0, 1]")
        return out

    def hooks(self) -> list:
        return [_PMRHook(self)]

    # --- prototypes ---
    def recompute(self, ctx, epoch: int, replace: bool = False) -> None:
        """New centroids on epoch ``epoch``'s rows, merged into the prototypes by EMA (replace: taken as is)."""
        c = self.cfg.methods.pmr
        rows = prototype_rows(ctx.maker.cache.labels(ctx.train_rows), np.asarray(ctx.train_rows),
                              c.proto_fraction, self.cfg.run.seed, epoch)
        new = class_centroids(ctx.model, ctx.maker, rows, max(self.cfg.optim.batch_size, 16),
                              self.cfg.run.precision)
        for v, (cent, ok) in new.items():
            old = None if replace else self.protos.get(v)
            self.protos[v], self.defined[v] = ema(cent, old, c.momentum, ok, None if replace else self.defined.get(v))
        self.rows_used = len(rows)

    def broadcast(self) -> None:
        """Rank 0's prototypes on every rank (a no-op without torchrun)."""
        for v in VIEWS:
            broadcast_(self.protos[v])
            d = broadcast_(self.defined[v].to(torch.uint8))
            self.defined[v] = d.bool()

    def state_dict(self) -> dict:
        return {k: {v: t[v].detach().cpu() for v in VIEWS} for k, t in (("protos", self.protos),
                                                                          ("defined", self.defined)) if t}

    def load_state_dict(self, state: dict) -> None:
        self._resumed = state if {"protos", "defined"} <= set(state) else None

    def restore(self, device: torch.device) -> bool:
        """The prototypes of last.pt (load_state_dict), if any, on ``device``."""
        state, self._resumed = getattr(self, "_resumed", None), None
        if not state:
            return False
        self.protos = {v: state["protos"][v].to(device, torch.float32) for v in VIEWS}
        self.defined = {v: state["defined"][v].to(device, torch.bool) for v in VIEWS}
        return True

    # --- the loss ---
    def loss(self, out: dict, batch: dict, ctx) -> dict:
        task = (ctx.task or standard)(out, batch, self.cfg)
        if not self.protos:  # prototypes come from on_train_start; a caller without hooks trains plainly
            return task
        y = targets(batch).to(out["logits"].device)
        weight = out.get("sample_weight")
        vm = getattr(ctx, "view_mask", None)
        base = torch.ones(y.shape[0], device=y.device) if weight is None else weight.float()
        both = base  # samples with both views' features: the ones that score the views
        g, pce, label_ok = {}, {}, {}
        for i, v in enumerate(VIEWS):
            w = base if vm is None else base * (vm[:, i] > 0).float()  # a dropped/absent view has no features
            g[v] = prototype_logits(out[f"h_{v}"], self.protos[v])  # (B, 2)
            label_ok[v] = self.defined[v].all(1)  # (L,) both classes of the label have a prototype
            parts = bce_pair(g[v], y, w)
            per_label = torch.stack([parts["loss_benign"], parts["loss_malignant"]])
            pce[v] = (per_label * label_ok[v].float()).sum()
            if vm is not None:
                both = both * (vm[:, i] > 0).float()
        labels = label_ok["cc"] & label_ok["mlo"]
        gg = torch.stack([g["cc"].detach(), g["mlo"].detach()])  # (2, B, L)
        s, ok = balanced_scores(true_class_probability(gg, y[None]), y, both, labels)  # all-reduced (torchrun)
        rho = score_ratio(s[0], s[1], ok.all(), 1.0)
        beta_cc, beta_mlo = pmr_coefficients(rho, self.cfg.methods.pmr.alpha)
        self.log = {"pmr_rho": rho, "pmr_beta_cc": beta_cc, "pmr_beta_mlo": beta_mlo}
        total = task["loss"] + beta_cc * pce["cc"] + beta_mlo * pce["mlo"]
        return {**task, "loss": total, "loss_task": task["loss"], "pmr_pce_cc": pce["cc"], "pmr_pce_mlo": pce["mlo"]}


class _PMRHook:
    """Prototypes before the first epoch (or loaded at a resume) and after every epoch; the step's rho."""

    def __init__(self, method: PMR):
        self.m = method

    def on_train_start(self, ctx) -> dict:
        if self.m.restore(next(ctx.model.parameters()).device):
            return {}
        if ctx.epoch > 0:
            print(f"{ctx.run_dir}: last.pt holds no PMR prototypes; recomputing them from the resumed model "
                  "(their running average starts again)")
        self.m.recompute(ctx, ctx.epoch)
        self.m.broadcast()
        return {}

    def after_backward(self, ctx) -> dict:
        return dict(self.m.log)

    def on_epoch_end(self, ctx) -> dict:
        # The prototypes the next epoch trains with. After epoch 0 they replace the initial model's (as PMR's
        # code does: the untrained model's centroids are not averaged in); later epochs use the EMA.
        self.m.recompute(ctx, ctx.epoch + 1, replace=ctx.epoch == 0)
        self.m.broadcast()  # identical on every rank: rank 0's go into last.pt
        line = {"pmr_proto_rows": self.m.rows_used}
        for v in VIEWS:
            sep = (self.m.protos[v][:, 1] - self.m.protos[v][:, 0]).norm(dim=-1)  # (L,)
            ok = self.m.defined[v].all(1)
            line[f"pmr_sep_{v}"] = float((sep * ok).sum() / ok.sum().clamp(min=1))
        return line
