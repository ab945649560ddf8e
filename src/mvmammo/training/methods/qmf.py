"""QMF, quality-aware multimodal fusion (Zhang et al., ICML 2023; methods.md 4.8): the robustness reference.

As implemented (cfg.methods.qmf: lam = 0.1, conf_scale = 0.1):
  - u_v = model.view_logits(out): each view's stand-alone logits (B, 2) (sum fusion: W h_v + b; Split: its own
    head). conf_v = models.gates.energy_confidence(u_v) = 0.1 * logsumexp(u_v/2, -u_v/2) per label (a sigmoid
    logit u is the 2-class softmax with logits (u/2, -u/2); logsumexp(0, u) = softplus(u) would favour positive
    logits). Fused z = conf_cc u_cc + conf_mlo u_mlo = models.gates.gated_logits("energy", ...), the very rule the
    model applies in eval mode (model.fusion_gate=energy, set by reg.method=qmf), so training and test fuse
    alike; as in QMF's code the confidences are not detached in z.
  - Loss = sum_v BCE(u_v) + BCE(z) + lam * sum_v sum_l L_rank(conf_v[:, l]); each BCE is the per-label mean
    summed over the two labels (the task's). ``loss_benign``/``loss_malignant`` are the fused z's.
  - History: per training breast (cache row id, batch["rows"]), per view and label, the running MEAN of its
    per-sample BCE of u_v over every step that trained it (detached); updated after the step's ranking loss is
    computed from the history before it. Normalised per (view, label) by min-max over the breasts seen so far:
    H in [0, 1].
  - Ranking (pairs (i, i+1 mod B) of the batch, as QMF): the breast with the lower historical loss should be
    the more confident by at least the gap:  L_rank = mean over pairs of relu(|H_i - H_j| - r_ij (c_i - c_j)),
    r_ij = sign(H_j - H_i). Pairs with a breast not seen before (no history) are left out of the mean.

Adaptations, and what the official code does differently (docs/balance.md):
  - conf_scale: the inference gate uses QMF's fixed 0.1 (models/gates.py QMF_SCALE), so training uses the same;
    methods.qmf.conf_scale is VALIDATED: any other value is refused (problems()), not silently ignored.
  - Running mean instead of QMF's cumulative sum: our sampler draws the label-free breasts afresh each epoch,
    so breasts are seen different numbers of times and a cumulative sum would rank them by how often they were
    drawn. Unseen breasts are excluded instead of entering with a history of 0.
  - The margin: the code (RGBD train_QMF_nyud2.py rank_loss) shifts the second input by +margin/target but
    feeds -target to MarginRankingLoss(margin=0), which gives relu(r'(c_i - c_j) - |dH|) (r' = +1 when i has the
    HIGHER loss): the margin becomes an allowance (a worse breast may be up to |dH| MORE confident) rather than
    the required gap of the confidence-ranking loss QMF builds on (CRL, Moon et al. 2020). We use the required
    gap. At the very first step the code's min-max normalisation of an all-zero history divides 0 by 0.
  - Per label: confidence, history and ranking are per label (two binary labels); the rank losses are summed
    over labels and views.
  - Resume: the history goes into last.pt at every epoch end (state_dict) and is restored, so a resumed run
    continues exactly; a last.pt without it starts it empty (a note says so). Under torchrun each rank adds
    the rows of its own slice of every global batch (each occurrence of a row in the epoch is trained by
    exactly one rank, training/distributed.py), so during an epoch a rank's history lacks the other ranks'
    additions of that epoch; at the epoch end each rank's additions (sum, count since the last merge) are
    all-reduced and added to the merged history, so every rank (and last.pt, written by rank 0) holds the
    global history, the one a single process would hold.
  - Train AUC: loss() puts the fused z in out["logits"] (the sum fusion stays in out["logits_sum"], as the model
    does in eval mode), so the epoch line's train AUC is that of QMF's prediction.
  - Breasts with a view dropped or absent (reg.moddrop_*, data.missing_view=mask) leave that view's BCE, ranking
    and history for the step.
  - Families: joint, shared, split; uni-view families are refused.
Logged per step: qmf_loss_fused, qmf_loss_cc, qmf_loss_mlo, qmf_rank_cc, qmf_rank_mlo, qmf_conf_cc, qmf_conf_mlo
(batch mean confidence); per epoch qmf_history_rows (breasts with a history).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from mvmammo.config import Config
from mvmammo.models.gates import QMF_SCALE, energy_confidence, gated_logits
from mvmammo.training.methods.base import Method, register_method
from mvmammo.training.methods.view_scores import all_reduce_sum
from mvmammo.training.tasks import bce_pair, targets

VIEWS = ("cc", "mlo")
TWO_VIEW = ("joint", "shared", "split")


def ranking_loss(conf: torch.Tensor, hist: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """Mean over valid pairs (i, i+1 mod B) of relu(|H_i - H_j| - sign(H_j - H_i) (c_i - c_j)), summed over labels.

    conf, hist: (B, L) confidences and normalised historical losses; ok: (B,) bool, the breast has a history.
    """
    c_j, h_j = torch.roll(conf, -1, 0), torch.roll(hist, -1, 0)
    pair_ok = (ok & torch.roll(ok, -1, 0)).float()[:, None]  # (B, 1)
    r = torch.sign(h_j - hist)  # +1: i had the lower loss, so i should be the more confident
    per = torch.relu((hist - h_j).abs() - r * (conf - c_j)) * pair_ok  # (B, L)
    return (per.sum(0) / pair_ok.sum().clamp(min=1)).sum()


class History:
    """Per row: summed per-sample loss (N, 2 views, 2 labels) and the number of steps that added to it (N, 2)."""

    def __init__(self, n_rows: int, device: torch.device):
        self.sum = torch.zeros(n_rows, 2, 2, dtype=torch.float32, device=device)
        self.count = torch.zeros(n_rows, 2, dtype=torch.float32, device=device)

    def grow(self, n_rows: int) -> None:
        if n_rows > self.sum.shape[0]:
            extra = n_rows - self.sum.shape[0]
            self.sum = torch.cat([self.sum, self.sum.new_zeros(extra, 2, 2)])
            self.count = torch.cat([self.count, self.count.new_zeros(extra, 2)])

    def normalised(self, rows: torch.Tensor, view: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(H (B, L) in [0, 1], seen (B,) bool) of ``rows`` for view ``view``: running means, min-max over the
        rows seen so far."""
        n = self.count[:, view]  # (N,)
        seen = n > 0
        mean = self.sum[:, view] / n.clamp(min=1)[:, None]  # (N, L)
        big = torch.finfo(mean.dtype).max
        lo = torch.where(seen[:, None], mean, torch.full_like(mean, big)).min(0).values  # (L,)
        hi = torch.where(seen[:, None], mean, torch.full_like(mean, -big)).max(0).values
        span = (hi - lo).clamp(min=1e-12)
        h = ((mean[rows] - lo) / span).clamp(0, 1)
        return h.float(), seen[rows]

    def state(self) -> dict:
        return {"sum": self.sum.detach().cpu(), "count": self.count.detach().cpu()}

    def merge_ranks(self, base: "History | None") -> None:
        """Under torchrun: this rank's additions since ``base`` (the last merged history) summed over ranks and
        added to ``base``, so every rank holds the global history. A no-op with one process (exact values)."""
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return
        n = self.sum.shape[0]
        b_sum, b_count = self.sum.new_zeros(n, 2, 2), self.count.new_zeros(n, 2)
        if base is not None:
            b_sum[:base.sum.shape[0]], b_count[:base.count.shape[0]] = base.sum, base.count
        delta = all_reduce_sum(torch.cat([(self.sum - b_sum).flatten(1), self.count - b_count], 1))  # (N, 6)
        self.sum = b_sum + delta[:, :4].view(n, 2, 2)
        self.count = b_count + delta[:, 4:]

    def copy(self) -> "History":
        h = History.__new__(History)
        h.sum, h.count = self.sum.clone(), self.count.clone()
        return h

    def add(self, rows: torch.Tensor, view: int, loss: torch.Tensor, weight: torch.Tensor) -> None:
        """Add the per-sample losses (B, L) of ``rows`` where weight (B,) > 0 (index_add: repeated rows add up)."""
        w = (weight > 0).float()
        self.sum[:, view].index_add_(0, rows, loss.float() * w[:, None])
        self.count[:, view].index_add_(0, rows, w)


@register_method("qmf")
class QMF(Method):
    """BCE of each view and of the confidence-weighted fusion, plus the confidence ranking loss."""

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.history: History | None = None
        self.log: dict = {}

    @classmethod
    def problems(cls, cfg: Config) -> list[str]:
        c, out = cfg.methods.qmf, []
        if cfg.model.family not in TWO_VIEW:
            out.append(f"reg.method=qmf fuses two views: model.family={cfg.model.family} reads one; use "
                       f"{', '.join(TWO_VIEW)}")
        if c.conf_scale != QMF_SCALE:
            out.append(f"methods.qmf.conf_scale={c.conf_scale}: the inference gate (models/gates.py) uses QMF's "
                       f"fixed {QMF_SCALE}; leave it at {QMF_SCALE} so training and evaluation fuse alike")
        if c.lam < 0:
            out.append(f"methods.qmf.lam={c.lam}: use a value >= 0")
        if cfg.model.fusion_gate != "energy":
            out.append(f"model.fusion_gate={cfg.model.fusion_gate}: QMF trains the energy-gated fusion; leave "
                       "model.fusion_gate=auto (or set energy) so evaluation reads the same fusion")
        return out

    def hooks(self) -> list:
        return [_QMFHook(self)]

    def state_dict(self) -> dict:
        return {} if self.history is None else self.history.state()

    def load_state_dict(self, state: dict) -> None:
        self._resumed = state if {"sum", "count"} <= set(state) else None

    def ensure_history(self, n_rows: int, device: torch.device) -> History:
        if self.history is None:
            self.history = History(n_rows, device)
        self.history.grow(n_rows)
        return self.history

    def loss(self, out: dict, batch: dict, ctx) -> dict:
        model = ctx.model
        u_cc, u_mlo = (u.float() for u in model.view_logits(out))
        conf = {"cc": energy_confidence(u_cc), "mlo": energy_confidence(u_mlo)}  # (B, 2) each
        u = {"cc": u_cc, "mlo": u_mlo}
        z = gated_logits("energy", u_cc, u_mlo)  # conf_cc u_cc + conf_mlo u_mlo: the eval-mode rule itself
        y = targets(batch).to(z.device)
        weight = out.get("sample_weight")
        base = torch.ones(y.shape[0], device=z.device) if weight is None else weight.float()
        vm = getattr(ctx, "view_mask", None)
        rows_np = np.asarray(batch["rows"])
        rows = torch.as_tensor(rows_np, dtype=torch.long).to(z.device, non_blocking=True)
        n_rows = max(len(ctx.maker.cache) if getattr(ctx, "maker", None) is not None else 0,
                     int(rows_np.max()) + 1 if len(rows_np) else 0)
        hist = self.ensure_history(n_rows, z.device)
        fused = bce_pair(z, y, weight)
        total = fused["loss"]
        parts = {"qmf_loss_fused": fused["loss"]}
        lam = self.cfg.methods.qmf.lam
        for i, v in enumerate(VIEWS):
            w = base if vm is None else base * (vm[:, i] > 0).float()
            lv = bce_pair(u[v], y, w)["loss"]
            h, seen = hist.normalised(rows, i)
            rank = ranking_loss(conf[v], h, seen & (w > 0))
            total = total + lv + lam * rank
            parts[f"qmf_loss_{v}"], parts[f"qmf_rank_{v}"] = lv, rank
            per_sample = F.binary_cross_entropy_with_logits(u[v].detach(), y, reduction="none")  # (B, 2)
            hist.add(rows, i, per_sample, w)  # after the ranking loss read the history before this step
        self.log = {f"qmf_conf_{v}": conf[v].detach().mean() for v in VIEWS}
        out["logits_sum"], out["logits"] = out["logits"], z  # the loop's train AUC reads QMF's prediction
        return {"loss": total, "loss_benign": fused["loss_benign"], "loss_malignant": fused["loss_malignant"],
                **parts}


class _QMFHook:
    """History: allocated (or reloaded at a resume) at the start, saved after every epoch."""

    def __init__(self, method: QMF):
        self.m = method

    def on_train_start(self, ctx) -> dict:
        device = next(ctx.model.parameters()).device
        hist = self.m.ensure_history(len(ctx.maker.cache), device)
        state, self.m._resumed = getattr(self.m, "_resumed", None), None
        if state is not None and state["sum"].shape[0] <= hist.sum.shape[0]:
            n = state["sum"].shape[0]
            hist.sum[:n] = state["sum"].to(device, torch.float32)
            hist.count[:n] = state["count"].to(device, torch.float32)
        elif ctx.epoch > 0:
            print(f"{ctx.run_dir}: last.pt holds no QMF loss history for this cohort; it starts empty")
        self.base = hist.copy()  # the merged (global) history: each rank's additions are counted from here
        return {}

    def after_backward(self, ctx) -> dict:
        return dict(self.m.log)

    def on_epoch_end(self, ctx) -> dict:
        hist = self.m.history
        hist.merge_ranks(getattr(self, "base", None))  # every rank: the global history (module doc)
        self.base = hist.copy() if dist.is_available() and dist.is_initialized() else None
        return {"qmf_history_rows": int((hist.count.sum(1) > 0).sum())}
