"""The analysis hooks a config asks for, built by whoever starts a run (train command, experiments, sweep
workers) and handed to the loop: per-group gradient norms (run.grad_norms), Loss Change Allocation (run.lca)
and TensorBoard event files (run.tensorboard). The loop never imports analysis code; this is the one place
that turns config switches into analysis hooks."""
from __future__ import annotations


def hooks_for(cfg) -> list:
    """Hooks for ``cfg``, in the order they should see a step (gradient norms before LCA, TensorBoard last)."""
    from mvmammo.report.tensorboard import hooks_for as tensorboard_hooks  # fails early if tensorboard is missing

    out: list = []
    if cfg.run.grad_norms:
        from mvmammo.analysis.grad_norms import GradNormHook

        out.append(GradNormHook())
    if cfg.run.lca:
        from mvmammo.analysis.lca import LCAHook

        out.append(LCAHook(cfg))
    return out + tensorboard_hooks(cfg)
