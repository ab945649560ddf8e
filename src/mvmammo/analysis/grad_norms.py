"""Gradient norm per parameter group at every training step, from the gradients the step already has.

Groups: the prefix before the first dot of a parameter name: cc, mlo, shared, and the auxiliary heads
aux_cc, aux_mlo when present (SPEC section 6, the paper's Figures 4a/6a/7a). Logged per step:
  grad_norm_<g>     = ||dL/d theta_g||_2 of the minibatch loss (before any gradient clipping), and
  rel_grad_norm_<g> = ||dL/d theta_g||_2 / ||theta_g||_2 (the scale-free version; Wu et al. 2022).

Cost: one fused ``torch._foreach_norm`` per group for the gradients and one for the parameters (a handful
of kernel launches instead of two per tensor), no extra backward. The norms stay on the device as 0-d
tensors; the loop converts them once per epoch, so there is no host synchronisation inside the step.
benchmarks/grad_norm_cost.py measures the overhead (benchmarks/RESULTS.md).
"""
from __future__ import annotations

import torch


def group_of(name: str) -> str:
    """The group of a parameter name: 'cc.column.layer1.0.conv1.weight' -> 'cc'."""
    return name.split(".", 1)[0]


def _norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """||concat(tensors)||_2 as a float32 0-d tensor (bf16/fp16 tensors are upcast first)."""
    if any(t.dtype != torch.float32 for t in tensors):
        tensors = [t.float() for t in tensors]  # _foreach_norm wants one dtype per call
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


def group_norms(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """{f"grad_norm_{g}", f"rel_grad_norm_{g}"} for each group with gradients (0-d tensors on the device).

    Parameters without a gradient (frozen, or unused this step) are left out of both norms.
    """
    grads: dict[str, list[torch.Tensor]] = {}
    params: dict[str, list[torch.Tensor]] = {}
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        g = group_of(name)
        grads.setdefault(g, []).append(p.grad.detach())
        params.setdefault(g, []).append(p.detach())
    out = {}
    with torch.no_grad():
        for g in grads:
            gn = _norm(grads[g])
            pn = _norm(params[g])
            out[f"grad_norm_{g}"] = gn
            out[f"rel_grad_norm_{g}"] = gn / pn.clamp(min=1e-12)
    return out


class GradNormHook:
    """Loop hook: after the backward of every step (before clipping and the optimizer step)."""

    def after_backward(self, ctx) -> dict:
        model = getattr(ctx.model, "_orig_mod", ctx.model)  # torch.compile wrapper -> the module
        return group_norms(model)
