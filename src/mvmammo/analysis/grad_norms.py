"""Gradient norm per parameter group at every training step, from the gradients the step already has.

Groups: cc, mlo, shared, and auxiliary heads (aux_cc, aux_mlo) when present (the prefix before the first
dot of a parameter name). Logged: ||g_group||_2 and the relative norm ||g_group|| / ||theta_group||.
The norms stay on the device; the loop converts them once per epoch (no host sync inside the step).
"""
from __future__ import annotations

import torch


def group_norms(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """{f"grad_norm_{g}", f"rel_grad_norm_{g}"} for each group with gradients (0-d tensors)."""
    sq_g: dict[str, list[torch.Tensor]] = {}
    sq_p: dict[str, list[torch.Tensor]] = {}
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        g = name.split(".", 1)[0]
        sq_g.setdefault(g, []).append(p.grad.detach().float().pow(2).sum())
        sq_p.setdefault(g, []).append(p.detach().float().pow(2).sum())
    out = {}
    for g in sq_g:
        gn = torch.stack(sq_g[g]).sum().sqrt()
        pn = torch.stack(sq_p[g]).sum().sqrt()
        out[f"grad_norm_{g}"] = gn
        out[f"rel_grad_norm_{g}"] = gn / pn.clamp(min=1e-12)
    return out


class GradNormHook:
    def after_backward(self, ctx) -> dict:
        model = getattr(ctx.model, "_orig_mod", ctx.model)
        return group_norms(model)
