"""Methods that carry state across epochs (MLA's projector, greedy learning's speeds, running means and window)
store it in last.pt: a run stopped after epoch 1 and resumed ends with the weights of the uninterrupted run."""
from __future__ import annotations

import pytest

from resume_check import assert_exact_resume


@pytest.mark.parametrize("method,extra", [
    ("mla", {}),
    ("greedy", {"methods.greedy.start_epoch": 0, "methods.greedy.epsilon": 0.0, "methods.greedy.window": 3}),
])
def test_resumed_method_state_matches_the_uninterrupted_run(tiny_cohort, tmp_path, method, extra):
    over = {"reg.method": method, "model.input_noise_std": 0.0, "run.prefetch": 0, "optim.batch_size": 8, **extra}
    assert_exact_resume(tiny_cohort, tmp_path, over, method, epochs=2)
