"""Loss Change Allocation: exactness on quadratic losses, first-order error O(step^2), adaptive Simpson
refinement, and the training hook (groups, errors reported, training left untouched)."""
import json

import numpy as np
import pytest
import torch

from mvmammo.training.checkpoint import load as ckpt_load
from mvmammo.analysis.lca_math import allocate_chord, simpson_weights

from conftest import tiny_overrides


def _quadratic(d: int, seed: int):
    """L(theta) = 1/2 theta^T A theta + c^T theta + 3 (float64), with its exact gradient."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(d, d, generator=g, dtype=torch.float64)
    a_mat = m @ m.T / d + 0.1 * torch.eye(d, dtype=torch.float64)
    c = torch.randn(d, generator=g, dtype=torch.float64)

    def loss(theta):
        return float(0.5 * theta @ a_mat @ theta + c @ theta + 3.0)

    def grad_fn(theta):
        theta = theta.double()
        return loss(theta), a_mat @ theta + c

    return loss, grad_fn, a_mat, c, g


def test_simpson_weights():
    np.testing.assert_allclose(simpson_weights(2), np.array([1, 4, 1]) / 6)
    np.testing.assert_allclose(simpson_weights(4), np.array([1, 4, 2, 4, 1]) / 12)
    for n in (2, 4, 8, 16, 32):
        assert simpson_weights(n).sum() == pytest.approx(1.0, abs=1e-15)
    with pytest.raises(ValueError):
        simpson_weights(3)


def test_simpson_allocation_is_exact_for_a_quadratic_loss():
    loss, grad_fn, a_mat, c, g = _quadratic(40, 0)
    a = torch.randn(40, generator=g, dtype=torch.float64)
    b = a + 0.7 * torch.randn(40, generator=g, dtype=torch.float64)
    res = allocate_chord(grad_fn, a, b, tol=1e-12)
    delta = loss(b) - loss(a)
    assert res.n == 2 and res.evals == 3 and res.converged
    assert float(res.lca.sum()) == pytest.approx(delta, rel=1e-9)
    assert abs(res.err) <= 1e-9 * abs(delta)
    # The gradient is linear along the chord, so its mean is the endpoint average, coordinate by coordinate.
    exact = (b - a) * 0.5 * ((a_mat @ a + c) + (a_mat @ b + c))
    torch.testing.assert_close(res.lca, exact, rtol=1e-12, atol=1e-12)
    assert res.lca.dtype == torch.float64


def test_first_order_error_is_quadratic_in_the_step():
    loss, grad_fn, a_mat, c, g = _quadratic(30, 1)
    a = torch.randn(30, generator=g, dtype=torch.float64)
    u = torch.randn(30, generator=g, dtype=torch.float64)
    errs = []
    for s in (0.2, 0.1, 0.05, 0.025):
        res = allocate_chord(grad_fn, a, a + s * u)
        d = s * u
        # For a quadratic, L(b) - L(a) - g(a).d = 1/2 d^T A d exactly.
        assert res.err_fo == pytest.approx(float(0.5 * d @ a_mat @ d), rel=1e-6)
        errs.append(res.err_fo)
    ratios = np.array(errs[:-1]) / np.array(errs[1:])
    np.testing.assert_allclose(ratios, 4.0, rtol=1e-5)  # halve the step -> a quarter of the error


def test_adaptive_refinement_on_a_non_polynomial_loss():
    """L = sum_i cos(w_i theta_i): Simpson's error falls ~16x per doubling; the loop stops at the tolerance."""
    w = torch.linspace(0.5, 3.0, 20, dtype=torch.float64)

    def grad_fn(theta):
        theta = theta.double()
        return float(torch.cos(w * theta).sum()), -w * torch.sin(w * theta)

    a = torch.zeros(20, dtype=torch.float64)
    b = torch.full((20,), 1.3, dtype=torch.float64)
    delta = float(torch.cos(w * b).sum() - torch.cos(w * a).sum())
    errs = {}
    for n in (2, 4, 8, 16, 32):
        res = allocate_chord(grad_fn, a, b, tol=0.0, max_n=n)
        assert res.n == n and res.evals == n + 1
        errs[n] = abs(res.err)
    assert errs[2] > 1e-3 * abs(delta)
    for n in (4, 8, 16):
        assert errs[n] < errs[n // 2] / 8  # fourth order: ideally /16
    res = allocate_chord(grad_fn, a, b, tol=1e-4)
    assert res.converged and res.n > 2 and abs(res.err) <= 1e-4 * abs(delta)
    # Per coordinate: the exact allocation is cos(w_i b_i) - cos(w_i a_i).
    torch.testing.assert_close(res.lca, torch.cos(w * b) - torch.cos(w * a), rtol=0, atol=1e-4 * abs(delta))


def _run(tmp_path, table, name, **extra):
    from mvmammo.config import resolve
    from mvmammo.training.loop import train

    over = {"optim.epochs": 1, "run.max_steps": 3, "optim.batch_size": 4, **extra}
    from mvmammo.analysis.hooks import hooks_for

    cfg = resolve("default", tiny_overrides(table, tmp_path / name, **over))
    return train(cfg, hooks=hooks_for(cfg))


def test_lca_hook_reports_groups_and_leaves_training_untouched(tiny_cohort, tmp_path):
    plain = _run(tmp_path, tiny_cohort, "plain")
    lca = _run(tmp_path, tiny_cohort, "lca", **{"run.lca": "true", "run.lca_every": 2, "run.lca_subsample": 8})
    lines = [json.loads(x) for x in (lca / "lca.jsonl").read_text().splitlines()]
    assert [(x["step_a"], x["step_b"]) for x in lines] == [(0, 2), (2, 3)]  # the last chord closes at the end
    for x in lines:
        assert x["subsample"] == 8 and x["n"] in (2, 4, 8, 16, 32)
        groups = sum(x[f"lca_{g}"] for g in ("cc", "mlo", "shared"))
        assert groups + x["err"] == pytest.approx(x["delta"], abs=1e-9)
        assert x["err_ratio"] == pytest.approx(abs(x["err"]) / abs(x["delta"]))
        assert x["converged"] == (x["err_ratio"] <= 0.05)
        assert x["converged"] or x["n"] == 32
        assert 0 <= x["helped_cc"] <= 1
    # The chord's end loss with its own buffers is where the next chord starts, up to the BN buffer shift.
    assert lines[1]["loss_a"] - lines[1]["bn_shift"] == pytest.approx(lines[0]["loss_b"], abs=1e-9)
    # LCA evaluates in eval mode, restores the weights exactly and draws no random numbers:
    # the run is bit-identical to the run without it, gradient norms included.
    steps = [[x for x in map(json.loads, (r / "metrics.jsonl").read_text().splitlines()) if x["kind"] == "step"]
             for r in (plain, lca)]
    assert steps[0] == steps[1] and "grad_norm_cc" in steps[0][0]
    sa, sb = (ckpt_load(r / "last.pt")["model"] for r in (plain, lca))
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_lca_subsample_redrawn_every_epoch(tiny_cohort, tmp_path):
    from mvmammo.analysis.lca import epoch_subsample
    from mvmammo.config import resolve
    from mvmammo.data.sampler import epoch_rows, exam_keys
    from mvmammo.training.inputs import prepare_cache

    run = _run(tmp_path, tiny_cohort, "redraw", **{"optim.epochs": 2, "run.max_steps": 0, "optim.batch_size": 16,
                                                   "run.lca": "true", "run.lca_every": 1000, "run.lca_redraw": "true",
                                                   "run.lca_fraction": 0.25})
    lines = [json.loads(x) for x in (run / "lca.jsonl").read_text().splitlines()]
    epochs = [x for x in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if x["kind"] == "epoch"]
    # One chord per epoch (lca_every is longer than the run): each ends at its epoch's end, on its own S.
    assert [x["subsample_epoch"] for x in lines] == [0, 1]
    assert [x["step_b"] for x in lines] == [e["step"] for e in epochs]
    assert lines[1]["step_a"] == lines[0]["step_b"]
    for x in lines:
        assert sum(x[f"lca_{g}"] for g in ("cc", "mlo", "shared")) + x["err"] == pytest.approx(x["delta"], abs=1e-9)
    # S of an epoch: a quarter of that epoch's positive and of its negative exams, both breasts of each.
    cfg = resolve("default", tiny_overrides(tiny_cohort, run, **{"run.lca_fraction": 0.25}))
    cache = prepare_cache(cfg, progress=False)  # the run's cache, reused
    train_rows = cache.rows("train")
    subs = [epoch_subsample(cache, train_rows, cfg, e) for e in (0, 1)]
    assert [len(s) for s in subs] == [x["subsample"] for x in lines]
    assert not np.array_equal(subs[0], subs[1])
    for e, sub in enumerate(subs):
        order = epoch_rows(train_rows, cache.labels(train_rows), cfg.run.seed, e, 1.0, "exam", cache.index)
        assert set(sub) <= set(order)
        exam_of = dict(zip(order, exam_keys(cache.index, order)))
        pos = {exam_of[r] for r in order if cache.labels([r]).max() > 0}
        neg = set(exam_of.values()) - pos
        got = {exam_of[r] for r in sub}
        assert len(got & pos) == round(0.25 * len(pos)) and len(got & neg) == round(0.25 * len(neg))
        assert len(sub) == sum(1 for r in order if exam_of[r] in got)  # every breast of a drawn exam
