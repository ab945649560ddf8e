"""Balanced multi-modal learning against greedy learning (Wu, Jastrzebski, Cho, Geras, ICML 2022) on our
late-fusion models: reg.method=greedy, methods.greedy.{start_epoch, epsilon, window, momentum}.

The paper's trigger is the conditional learning speed of each branch, measured on the cross-modal (MMTM)
parameters against the branch's own. Pure late fusion has no cross-modal parameters, so (methods.md 4.2)
ADAPTATION: the column-level speed ratio
    mu_v    = sum over steps of ||grad theta_v||^2 / ||theta_v||^2,   theta_v = the parameters named v.* (the
              view's column and FC; Split: also its head; Shared: only its FC, the column being common),
              squared norms summed over all of the group's tensors before the division;
    d_speed = log10(mu_cc / mu_mlo)     (> 0: the CC column has been learning faster).
Re-balancing (as the reference callback): from epoch start_epoch on, at a step outside a window with
|d_speed| > epsilon, the next `window` training steps are a re-balancing window in which the DOMINANT view
(cc if d_speed > 0, else mlo) has its features h_v replaced by their running mean (EMA with `momentum`:
m <- momentum m + (1 - momentum) mean_batch(h_v), first value the first batch's mean; updated at every
training step from the real features of a view that is not being replaced). The replacement is a forward
hook on model.view_fc(view) (registered at the trigger, removed after the window; training mode only, so
validation inside a window sees the real features): the fused logit then varies only with the under-learned
view, which alone drives the loss. The stand-in is ``0 * h + m``: its value is m and the dominant column gets
an exactly zero gradient (kept in the graph so DDP sees every parameter), and its grads are then set to None
so Adam's momentum does not move it either: the dominant view is frozen for the window.
As in the reference, mu accumulates only at steps outside a window (inside one the dominant column's
gradient is zero by construction and would bias the ratio) and d_speed is not re-evaluated inside a window.
The trigger decision needs the norms on the host: one synchronisation per step (a few scalars).
No per-view batch score is computed, so no class-balanced adaptation is needed.

Logged per step: greedy_d_speed, greedy_mu_cc, greedy_mu_mlo, greedy_window (1 if this step's forward was
re-balanced), greedy_replaced (0 cc, 1 mlo, -1 none), greedy_trigger (1 at the step that opens a window).
Resume: mu, d_speed, the running means and an open window (its view and steps left) are stored in last.pt at
every epoch end (state_dict) and restored, so a resumed run re-balances as the uninterrupted one.
Families: uni-view refused; Joint, Shared and Split supported. run.compile=true refused (a compiled graph does
not pick up forward hooks registered after it was traced).
"""
from __future__ import annotations

import math

import torch

from mvmammo.config import Config
from mvmammo.training.methods.base import Method, register_method
from mvmammo.training.methods.mla import drop_grads, global_mean

VIEWS = ("cc", "mlo")


def speed_terms(named_parameters) -> dict[str, float]:
    """{view: ||grad theta_v||^2 / ||theta_v||^2} over the parameters named view.* (0 when no gradient)."""
    g2 = {v: [] for v in VIEWS}
    w2 = {v: [] for v in VIEWS}
    for name, p in named_parameters:
        v = name.split(".")[0]
        if v in g2 and p.grad is not None:
            g2[v].append(p.grad.detach().float().pow(2).sum())
            w2[v].append(p.detach().float().pow(2).sum())
    flat = []
    for v in VIEWS:
        for d in (g2, w2):
            flat.append(torch.stack(d[v]).sum() if d[v] else torch.zeros(()))
    vals = torch.stack([t.cpu() for t in flat]).tolist()  # one host transfer: g2_cc, w2_cc, g2_mlo, w2_mlo
    return {v: (vals[2 * i] / vals[2 * i + 1] if vals[2 * i + 1] > 0 else 0.0) for i, v in enumerate(VIEWS)}


def d_speed(mu_cc: float, mu_mlo: float) -> float:
    """log10(mu_cc / mu_mlo); NaN while either speed is 0 (no gradient seen yet)."""
    if mu_cc <= 0 or mu_mlo <= 0:
        return math.nan
    return math.log10(mu_cc / mu_mlo)


def dominant_view(d: float, epsilon: float) -> str | None:
    """The view to replace: cc if d_speed > epsilon, mlo if d_speed < -epsilon, else None (NaN: None)."""
    if not math.isfinite(d) or abs(d) <= epsilon:
        return None
    return "cc" if d > 0 else "mlo"


def ema(old: torch.Tensor | None, new: torch.Tensor, momentum: float) -> torch.Tensor:
    """momentum * old + (1 - momentum) * new; the first value is new itself."""
    return new if old is None else momentum * old + (1 - momentum) * new


@register_method("greedy")
class Greedy(Method):
    """The speed trigger and the re-balancing windows (module doc); changes no loss and no mask."""

    @classmethod
    def problems(cls, cfg: Config) -> list[str]:
        c, out = cfg.methods.greedy, []
        if cfg.model.family.startswith("uni_"):
            out.append(f"reg.method=greedy with model.family={cfg.model.family}: the speed ratio compares two "
                       "views; use joint, shared or split")
        if cfg.run.compile:
            out.append("reg.method=greedy with run.compile=true: the feature replacement is a forward hook added "
                       "and removed during training, which a compiled model does not see; set run.compile=false")
        if c.window < 1:
            out.append(f"methods.greedy.window={c.window}: must be >= 1 step")
        if not 0 <= c.momentum < 1:
            out.append(f"methods.greedy.momentum={c.momentum}: must be in [0, 1)")
        if not c.epsilon >= 0:
            out.append(f"methods.greedy.epsilon={c.epsilon}: must be >= 0")
        if c.start_epoch < 0:
            out.append(f"methods.greedy.start_epoch={c.start_epoch}: must be >= 0")
        return out

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.c = cfg.methods.greedy
        self._reset()

    def _reset(self) -> None:
        self.mu = {v: 0.0 for v in VIEWS}
        self.mean: dict[str, torch.Tensor | None] = {v: None for v in VIEWS}  # (fc_dim,) running means
        self.d = math.nan
        self.replaced: str | None = None  # the view whose features the hook replaces
        self.left = 0  # re-balanced steps still to run
        self._handle = None

    def hooks(self) -> list:
        return [self]

    # --- the replacement ---
    def _substitute(self, module, inputs, output):
        if not module.training:
            return None  # evaluation inside a window: the real features
        m = self.mean[self.replaced].to(output.dtype)
        return 0 * output + m  # (B, fc_dim): value m, zero gradient into the column

    def _open(self, model, view: str) -> None:
        self.replaced, self.left = view, self.c.window
        self._handle = model.view_fc(view).register_forward_hook(self._substitute)

    def _close(self) -> None:
        if self._handle is not None:
            self._handle.remove()
        self._handle, self.replaced, self.left = None, None, 0

    # --- hooks ---
    def on_train_start(self, ctx) -> dict:
        self._close()
        resumed, self._resumed = getattr(self, "_resumed", None), None
        self._reset()
        if resumed:  # last.pt's state after the last finished epoch: mu, running means and an open window
            self.mu = {v: float(resumed["mu"][v]) for v in VIEWS}
            self.d = float(resumed["d"])
            device = next(ctx.model.parameters()).device
            self.mean = {v: (None if resumed["mean"].get(v) is None else resumed["mean"][v].to(device))
                         for v in VIEWS}
            if resumed.get("replaced") in VIEWS and int(resumed.get("left", 0)) > 0:
                self._open(ctx.model, resumed["replaced"])
                self.left = int(resumed["left"])
        return {}

    def state_dict(self) -> dict:
        """Carried across epochs in last.pt, so a resumed run re-balances exactly as the uninterrupted one."""
        return {"mu": dict(self.mu), "d": float(self.d),
                "mean": {v: m.detach().cpu() for v, m in self.mean.items() if m is not None},
                "replaced": self.replaced or "", "left": int(self.left)}

    def load_state_dict(self, state: dict) -> None:
        self._resumed = state

    def on_train_end(self, ctx) -> dict:
        self._close()
        return {}

    def after_backward(self, ctx) -> dict:
        rebalanced = self._handle is not None  # this step's forward ran with the stand-in
        replaced = self.replaced
        for i, v in enumerate(VIEWS):  # running means from real features only
            if v != replaced:
                keep = None if ctx.view_mask is None else ctx.view_mask[:, i]
                batch_mean, count = global_mean(ctx.out[f"h_{v}"], keep)
                new = ema(self.mean[v], batch_mean, self.c.momentum)
                old = new if self.mean[v] is None else self.mean[v]
                self.mean[v] = torch.where(count > 0, new, old)  # no row with the view: keep the old mean
        trigger = 0
        if rebalanced:
            drop_grads(ctx.model, replaced)  # frozen for the window (its gradient is exactly 0 anyway)
            self.left -= 1
            if self.left == 0:
                self._close()
        else:
            for v, s in speed_terms(ctx.model.named_parameters()).items():
                self.mu[v] += s
            self.d = d_speed(self.mu["cc"], self.mu["mlo"])
            view = dominant_view(self.d, self.c.epsilon)
            if ctx.epoch >= self.c.start_epoch and view is not None:
                self._open(ctx.model, view)
                trigger = 1
        return {"greedy_d_speed": self.d, "greedy_mu_cc": self.mu["cc"], "greedy_mu_mlo": self.mu["mlo"],
                "greedy_window": int(rebalanced), "greedy_replaced": VIEWS.index(replaced) if rebalanced else -1,
                "greedy_trigger": trigger}
