"""Loss Change Allocation during training (run.lca): the MIDL "every k iterations, on a subsample" variant.

Every ``run.lca_every`` optimizer steps the change of the loss on a subsample S of the training set
(``run.lca_subsample`` breasts drawn once at the start; or, with ``run.lca_redraw``, re-drawn every epoch
as ``run.lca_fraction`` of that epoch's positive and of its negative exams, as the paper's Appendix A)
between the previous LCA point theta_a and now
theta_b is allocated to every trainable parameter along the straight chord a -> b (analysis/lca_math.py:
adaptive composite Simpson, n = 2..32, until |err| <= run.lca_tol |L(b) - L(a)|), and summed per parameter
group (cc, mlo, shared, aux_cc, aux_mlo). See docs/analysis.md for the choices; in short:

- L is the run's training objective (its task loss, the sum of the two BCEs for the standard task), the
  mean over S of the centre windows (maker.make(rows, train=False): no augmentation).
- The model is in eval mode while L is evaluated: no input noise, and BatchNorm uses its running
  statistics, which the evaluation does not update. The running statistics are buffers that change with
  training but are not parameters: if they changed along the chord, grad L would not be the whole
  derivative of L along it and the path integral would not telescope. So for the chord a -> b every point,
  the endpoints included, uses the buffers as they are at b (the current ones); L(a) is recomputed with b's
  buffers. The jump from L(a; buffers at a) (the previous line's loss_b) to L(a; buffers at b) is logged
  as ``bn_shift``, so the cumulative sum of lca_* + err + bn_shift reconstructs the eval-mode loss curve.
- With run.lca_redraw, a chord ends at every epoch end (on the subsample it started on) and the next one
  starts on the new epoch's subsample, so no chord mixes two subsamples; its first chord is then shorter
  than run.lca_every steps.
- Streaming: only theta_a (flat float32, on the CPU) is kept between points; accumulators are float64.
- The chord's split is not the SGD trajectory's split (k steps per chord cut off oscillations); what is
  reported is the k-step LCA of the chord.

Output: one JSON line per chord in ``lca.jsonl`` in the run folder (kind "lca"), with per-group Simpson and
first-order allocations, the approximation errors and their ratios to the loss change, n, the time spent.
A resumed run drops the lines after its resume step and starts a fresh chord there.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from mvmammo.analysis.grad_norms import group_of
from mvmammo.analysis.lca_math import allocate_chord, error_ratio
from mvmammo.data.sampler import batches, epoch_rows, subsample_rows

CACHE_LIMIT_BYTES = 512 * 2**20  # keep S's input tensors in memory below this; else rebuild them per pass


def pick_subsample(labels: np.ndarray, n: int, neg_ratio: float, seed: int) -> np.ndarray:
    """Indices into ``labels`` (N, 2) of a fixed subsample shaped like a training epoch.

    An epoch holds every labelled breast and neg_ratio x as many label-free ones, so S draws labelled and
    label-free breasts in that proportion (the paper's 970 exams: 10% of both kinds of an epoch's sample).
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1CA]))
    lab = np.flatnonzero(labels.max(1) > 0)
    free = np.flatnonzero(labels.max(1) == 0)
    n = min(n, len(labels))
    n_lab = min(len(lab), int(round(n / (1.0 + neg_ratio)))) if len(free) else min(len(lab), n)
    n_free = min(len(free), n - n_lab)
    n_lab = min(len(lab), n - n_free)
    pick = np.concatenate([rng.choice(lab, n_lab, replace=False), rng.choice(free, n_free, replace=False)])
    return np.sort(pick)


def epoch_subsample(cache, train_rows: np.ndarray, cfg, epoch: int) -> np.ndarray:
    """run.lca_redraw's S for one epoch: run.lca_fraction of the epoch's positive and of its negative units
    (exams under data.sampling=exam, both breasts of each; else breasts), from the epoch's own sample."""
    rows = np.asarray(train_rows)
    order = epoch_rows(rows, cache.labels(rows), cfg.run.seed, epoch, cfg.data.neg_ratio, cfg.data.sampling,
                       cache.index)
    index = cache.index if cfg.data.sampling == "exam" else None
    return subsample_rows(order, cache.labels(order), cfg.run.lca_fraction, cfg.run.seed, epoch, index)


class LCAHook:
    def __init__(self, cfg, chunk: int = 32):
        self.cfg = cfg
        self.every = int(cfg.run.lca_every)
        if self.every < 1:
            raise ValueError(f"run.lca_every must be >= 1, got {self.every}")
        self.tol = float(cfg.run.lca_tol)
        self.chunk = chunk
        self.total_s = 0.0

    # --- setup ---------------------------------------------------------------------------------
    def on_train_start(self, ctx) -> None:
        self.task = ctx.task  # the config's plain task loss, handed over by the loop
        self.maker = ctx.maker
        self.params = [(n, p) for n, p in ctx.model.named_parameters() if p.requires_grad]
        sizes = [p.numel() for _, p in self.params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.groups: dict[str, list[int]] = {}
        for i, (name, _) in enumerate(self.params):
            self.groups.setdefault(group_of(name), []).append(i)
        dev = self.params[0][1].device
        self.acc_device = torch.device("cpu") if dev.type == "mps" else dev  # float64 accumulators
        self.redraw = bool(self.cfg.run.lca_redraw)
        self.train_rows = np.asarray(ctx.train_rows)
        if self.redraw:
            self._use(epoch_subsample(ctx.maker.cache, self.train_rows, self.cfg, ctx.epoch), ctx.epoch)
        else:
            labels = ctx.maker.cache.labels(self.train_rows)
            idx = pick_subsample(labels, self.cfg.run.lca_subsample, self.cfg.data.neg_ratio, self.cfg.run.seed)
            self._use(self.train_rows[idx], None)
        self.path = Path(ctx.run_dir) / "lca.jsonl"
        self._truncate(ctx.step)
        self.step_a = ctx.step
        self.theta_a = self._flat().cpu()  # the only snapshot kept between points
        self.loss_a_own = self._loss_only(ctx.model)  # L(a) with a's own buffers

    def _use(self, rows: np.ndarray, epoch: int | None) -> None:
        """Make ``rows`` the subsample S (its centre-window batches kept in memory when small enough)."""
        self.rows, self.rows_epoch = np.asarray(rows), epoch
        self.chunks = list(batches(self.rows, self.chunk))
        spec = self.maker.cache.spec
        per = sum(int(np.prod(spec.size(v))) for v in ("cc", "mlo")) * spec.channels * 4
        self.cached = [self.maker.make(c, train=False) for c in self.chunks] \
            if per * len(self.rows) <= CACHE_LIMIT_BYTES else None

    def _truncate(self, step: int) -> None:
        if not self.path.exists():
            return
        keep = [ln for ln in self.path.read_text().splitlines() if ln.strip() and json.loads(ln)["step_b"] <= step]
        self.path.write_text("".join(ln + "\n" for ln in keep))

    # --- the loss on S and its gradient --------------------------------------------------------------
    def _flat(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for _, p in self.params]).float()

    @torch.no_grad()
    def _set(self, theta: torch.Tensor) -> None:
        for i, (_, p) in enumerate(self.params):
            p.copy_(theta[self.offsets[i]:self.offsets[i + 1]].view_as(p))

    def _batches(self):
        if self.cached is not None:
            yield from self.cached
        else:
            for c in self.chunks:
                yield self.maker.make(c, train=False)

    def _chunk_loss(self, model, batch) -> torch.Tensor:
        out = model(batch["cc"], batch["mlo"])
        return self.task(out, batch, self.cfg)["loss"] * (len(batch["rows"]) / len(self.rows))

    def _loss_only(self, model) -> float:
        was = model.training
        model.eval()
        with torch.no_grad():
            total = sum(float(self._chunk_loss(model, b)) for b in self._batches())
        model.train(was)
        return total

    def _grad_fn(self, model):
        params = [p for _, p in self.params]

        def fn(theta: torch.Tensor) -> tuple[float, torch.Tensor]:
            self._set(theta.to(params[0].device))
            loss = 0.0
            grad = torch.zeros(int(self.offsets[-1]), dtype=torch.float64, device=self.acc_device)
            for b in self._batches():
                with torch.enable_grad():
                    ls = self._chunk_loss(model, b)
                    gs = torch.autograd.grad(ls, params, allow_unused=True)
                loss += float(ls.detach())
                for i, g in enumerate(gs):
                    if g is not None:
                        grad[self.offsets[i]:self.offsets[i + 1]] += g.reshape(-1).to(self.acc_device, torch.float64)
            return loss, grad

        return fn

    # --- one chord -------------------------------------------------------------------------------
    def _chord(self, ctx) -> dict:
        t0 = time.time()
        model = ctx.model
        was = model.training
        model.eval()  # running stats used, not updated; no input noise
        theta_b = self._flat()
        try:
            res = allocate_chord(self._grad_fn(model), self.theta_a.to(self.acc_device), theta_b.to(self.acc_device),
                                 tol=self.tol)
        finally:
            self._set(theta_b)  # back exactly to the training state
            model.train(was)
        line = {"kind": "lca", "epoch": ctx.epoch, "step_a": self.step_a, "step_b": ctx.step,
                "subsample": int(len(self.rows)), "subsample_epoch": self.rows_epoch,
                "n": res.n, "evals": res.evals, "converged": res.converged,
                "loss_a": res.loss_a, "loss_b": res.loss_b, "delta": res.delta,
                "bn_shift": res.loss_a - self.loss_a_own,
                "err": res.err, "err_ratio": error_ratio(res.err, res.delta),
                "err_fo": res.err_fo, "err_fo_ratio": error_ratio(res.err_fo, res.delta)}
        for g, idx in self.groups.items():
            parts = [slice(int(self.offsets[i]), int(self.offsets[i + 1])) for i in idx]
            lca = torch.cat([res.lca[s] for s in parts])
            line[f"lca_{g}"] = float(lca.sum())
            line[f"lca_fo_{g}"] = float(torch.cat([res.lca_fo[s] for s in parts]).sum())
            line[f"helped_{g}"] = float((lca < 0).double().mean())  # fraction of parameters that helped
        self.theta_a = theta_b.cpu()
        self.step_a = ctx.step
        self.loss_a_own = res.loss_b
        dt = time.time() - t0
        self.total_s += dt
        line["time_s"] = round(dt, 3)
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")
        return line

    def after_step(self, ctx) -> dict:
        if ctx.step % self.every == 0 and ctx.step > self.step_a:
            self._chord(ctx)
        return {}

    def on_epoch_end(self, ctx) -> dict:
        """run.lca_redraw: close the chord on this epoch's subsample, then draw the next epoch's."""
        if not self.redraw or ctx.epoch + 1 >= self.cfg.optim.epochs:
            return {}
        if ctx.step > self.step_a:
            self._chord(ctx)
        self._use(epoch_subsample(ctx.maker.cache, self.train_rows, self.cfg, ctx.epoch + 1), ctx.epoch + 1)
        self.loss_a_own = self._loss_only(ctx.model)  # L(a) on the new subsample, a's own buffers
        return {}

    def on_train_end(self, ctx) -> None:
        if ctx.step > self.step_a:  # the last partial chord, so the cumulative LCA covers the whole run
            self._chord(ctx)
