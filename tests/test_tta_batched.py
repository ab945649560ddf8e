"""TTA inference stacks several draws' windows into one forward (predict_outputs(window_batch=...)): the
outputs equal a plain loop of one forward per draw, with the boxes of draw t from generator t advanced chunk
by chunk, for two-view and one-view breasts, every family (combine), and a last chunk smaller than the rest."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from synthetic_cache import write_cache  # noqa: E402

from mvmammo.config import ModelConfig  # noqa: E402
from mvmammo.data.sampler import batches  # noqa: E402
from mvmammo.evaluation.predict import combine, draw_groups, predict_outputs, predict_rows  # noqa: E402
from mvmammo.models.registry import build_model  # noqa: E402
from mvmammo.training.inputs import BatchMaker  # noqa: E402

N_ROWS = 7
# rows 1 (CC only) and 4 (MLO only) lack a view; chunks of 3 put them in different chunks
PRESENT = np.ones((N_ROWS, 2), dtype=bool)
PRESENT[1, 1] = False
PRESENT[4, 0] = False


class OneViewCache:
    """A window cache whose rows 1 and 4 lack a view (the cache's pixels are unchanged; the model masks them)."""

    def __init__(self, cache):
        self._cache = cache

    def __getattr__(self, name):
        return getattr(self._cache, name)

    def __len__(self):
        return len(self._cache)

    def present(self, rows=None):
        return PRESENT if rows is None else PRESENT[np.asarray(rows)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return OneViewCache(write_cache(tmp_path_factory.mktemp("tta"), breasts=N_ROWS, size="small", channels=1,
                                    seed=3))


def tiny(family):
    torch.manual_seed(0)
    return build_model(ModelConfig(family=family, width=4, fc_dim=8), in_channels=1).eval()


@torch.no_grad()
def reference(model, maker, rows, tta, batch_size, seed=0):
    """The plain loop: per chunk, per draw, augment and run one forward of that draw's windows."""
    gens = [torch.Generator().manual_seed(seed * 1000 + t) for t in range(tta)]
    out = {k: [[] for _ in range(tta)] for k in ("p", "logits_cc", "logits_mlo")}
    for chunk in batches(np.asarray(rows), batch_size):
        raw, labels = maker.load(chunk)
        present = torch.from_numpy(PRESENT[chunk].astype(np.float32))
        mask = None if PRESENT[chunk].all() else present
        for t in range(tta):
            b = maker.assemble(chunk, raw, labels, train=True, generator=gens[t])
            o = model(b["cc"], b["mlo"], view_mask=mask)
            out["p"][t].append(combine(model, o, present))
            for i, v in enumerate(("cc", "mlo")):
                z = o.get(f"logits_{v}", torch.full_like(o["logits"], float("nan")))
                out[f"logits_{v}"][t].append(torch.where(present[:, i:i + 1] > 0, z, float("nan")))
    return {k: torch.stack([torch.cat(x) for x in v]).double().numpy() for k, v in out.items()}


def test_draw_groups_cover_every_draw_once_within_the_window_budget():
    assert [list(g) for g in draw_groups(10, 16, 64)] == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]
    assert [list(g) for g in draw_groups(10, 16, 16)] == [[t] for t in range(10)]
    assert [list(g) for g in draw_groups(10, 32, 16)] == [[t] for t in range(10)]  # at least one draw
    assert [list(g) for g in draw_groups(10, 4, 64)] == [list(range(10))]
    assert [list(g) for g in draw_groups(1, 8, 64)] == [[0]]


@pytest.mark.parametrize("family", ["joint", "split", "uni_cc", "uni_mlo"])
@pytest.mark.parametrize("prefetch", [0, 2])
def test_batched_tta_equals_one_forward_per_draw(cache, family, prefetch):
    model = tiny(family)
    maker = BatchMaker(cache, torch.device("cpu"), prefetch=prefetch)
    rows = np.array([2, 1, 0, 4, 6, 5, 3])  # chunks of 3: [2 1 0] [4 6 5] [3] (the last one smaller)
    want = reference(model, BatchMaker(cache, torch.device("cpu")), rows, tta=5, batch_size=3, seed=2)
    # window_batch 7: two draws of a 3-row chunk per forward (groups 2, 1, 2), all five of the 1-row chunk
    for wb in (7, 1, 1000):
        got = predict_outputs(model, maker, rows, tta=5, batch_size=3, seed=2, window_batch=wb)
        for k in want:
            assert got[k].shape == (5, N_ROWS, 2)
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=f"{k} window_batch={wb}")
    # the draws differ from each other (the comparison is not between constants) and NaN only where expected
    assert np.nanmax(np.abs(want["p"][0] - want["p"][1])) > 1e-6
    if family == "uni_cc":
        assert np.isnan(want["p"][:, 3]).all() and not np.isnan(want["p"][:, [0, 1, 2, 4, 5, 6]]).any()
    if family == "split":
        assert not np.isnan(want["p"]).any()
        assert np.isnan(want["logits_mlo"][:, 1]).all() and np.isnan(want["logits_cc"][:, 3]).all()


def test_predict_rows_passes_window_batch_and_no_tta_is_one_window(cache):
    model = tiny("joint")
    maker = BatchMaker(cache, torch.device("cpu"))
    rows = np.arange(N_ROWS)
    a = predict_rows(model, maker, rows, tta=3, batch_size=4, window_batch=8)
    b = predict_rows(model, maker, rows, tta=3, batch_size=4, window_batch=4)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert predict_rows(model, maker, rows, tta=0, batch_size=4).shape == (1, N_ROWS, 2)
