"""Loss Change Allocation along one chord: the pure math, testable without a network.

For a chord from theta_a to theta_b (d = b - a) the gradient theorem gives exactly
    L(b) - L(a) = int_0^1 <grad L(a + t d), d> dt,
and the integrand splits per parameter i: LCA_i = d_i * int_0^1 g_i(a + t d) dt (Lan et al. 2019).
The integral is approximated by composite Simpson quadrature on n equal intervals,
    int_0^1 g(t) dt ~ (1 / 3n) [g_0 + 4 g_1 + 2 g_2 + 4 g_3 + ... + 4 g_{n-1} + g_n],  g_j = g(j / n),
starting at n = 2 and doubling (4, 8, 16, 32) until the approximation error
    err = (L(b) - L(a)) - sum_i LCA_i
is at most ``tol * |L(b) - L(a)|`` (or n = max_n). Doubling reuses every point already evaluated: only the
n new odd points are new, so the cost is n + 1 gradient evaluations in all for the final n.
First order, for comparison: LCA^FO_i = g_i(a) d_i, with err_FO = (L(b) - L(a)) - sum_i LCA^FO_i.

Streaming: three float64 accumulators of the parameter size (the endpoint sum, the sum over odd and over
even interior points), never the list of gradients, so memory does not grow with n.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

GradFn = Callable[[torch.Tensor], tuple[float, torch.Tensor]]  # theta (D,) -> (loss, grad (D,))


def simpson_weights(n: int) -> np.ndarray:
    """Composite Simpson weights for n (even) intervals on [0, 1]: (n + 1,), [1, 4, 2, ..., 4, 1] / (3n).

    They sum to 1 (the length of [0, 1]), so weights @ g is the mean of g along the chord.
    """
    if n < 2 or n % 2:
        raise ValueError(f"Simpson's rule needs an even number of intervals >= 2, got {n}")
    w = np.full(n + 1, 2.0)
    w[1::2] = 4.0
    w[0] = w[-1] = 1.0
    return w / (3 * n)


@dataclass
class ChordAllocation:
    """The allocation of L(b) - L(a) over the D parameters of one chord (float64 throughout)."""

    lca: torch.Tensor     # (D,) Simpson allocation per parameter; negative = helped (loss went down)
    lca_fo: torch.Tensor  # (D,) first-order allocation g(a) * d
    loss_a: float
    loss_b: float
    n: int                # intervals of the accepted Simpson rule
    evals: int            # gradient evaluations spent (n + 1)
    converged: bool       # |err| <= tol |delta| reached (False: stopped at max_n)

    @property
    def delta(self) -> float:
        return self.loss_b - self.loss_a

    @property
    def err(self) -> float:
        return self.delta - float(self.lca.sum())

    @property
    def err_fo(self) -> float:
        return self.delta - float(self.lca_fo.sum())


def _ratio(err: float, delta: float) -> float:
    return abs(err) / abs(delta) if delta != 0 else float("inf") if err != 0 else 0.0


def allocate_chord(grad_fn: GradFn, a: torch.Tensor, b: torch.Tensor, tol: float = 0.05, max_n: int = 32,
                   n0: int = 2) -> ChordAllocation:
    """Allocate L(b) - L(a) to each coordinate of theta by adaptive composite Simpson quadrature.

    ``grad_fn(theta)`` returns the loss (float) and its gradient (D,) at theta; it is called at the points
    a + (j / n) d, j = 0..n, once each (a and b are passed exactly as given, not recomputed as a + 0 d and
    a + 1 d). ``a``, ``b``: (D,) tensors on the device where the accumulation should happen.
    """
    if n0 < 2 or n0 % 2 or max_n < n0:
        raise ValueError(f"need an even n0 >= 2 and max_n >= n0, got n0={n0}, max_n={max_n}")
    a64, b64 = a.double(), b.double()
    d = b64 - a64  # (D,) float64; exact for float32 endpoints

    def g(theta: torch.Tensor) -> tuple[float, torch.Tensor]:
        loss, grad = grad_fn(theta)
        return float(loss), grad.double()

    def point(j: int, n: int) -> torch.Tensor:
        return a64 + (j / n) * d

    loss_a, g_a = g(a)
    loss_b, g_b = g(b)
    lca_fo = g_a * d
    ends = g_a + g_b  # g_0 + g_n
    del g_a, g_b
    n, evals = n0, 2
    even = torch.zeros_like(d)  # sum of g at interior points j even
    odd = torch.zeros_like(d)   # sum of g at interior points j odd
    for j in range(1, n):
        _, gj = g(point(j, n))
        (odd if j % 2 else even).add_(gj)
        evals += 1
    delta = loss_b - loss_a
    while True:
        lca = d * (ends + 4.0 * odd + 2.0 * even) / (3.0 * n)
        err = delta - float(lca.sum())
        converged = abs(err) <= tol * abs(delta)
        if converged or n * 2 > max_n:
            return ChordAllocation(lca, lca_fo, loss_a, loss_b, n, evals, converged)
        # Double n: the old odd and even points become the new even ones; the new odd points are new.
        even.add_(odd)
        odd.zero_()
        n *= 2
        for j in range(1, n, 2):
            _, gj = g(point(j, n))
            odd.add_(gj)
            evals += 1


def error_ratio(err: float, delta: float) -> float:
    """|err| / |delta| (inf when the loss did not change but the allocation is off, 0 when both are 0)."""
    return _ratio(err, delta)
