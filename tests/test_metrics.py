"""Metric tests: AUC vs scikit-learn, DeLong vs the `pauc` package (a test-only oracle), a hand-computed
table, and the patient-level bootstrap on constructed cases."""
from __future__ import annotations

import numpy as np
import pauc
import pytest
from sklearn.metrics import roc_auc_score

from mvmammo.evaluation.metrics import (auc, bootstrap_aucs, bootstrap_ci, delong_ci, delong_paired_test,
                                        delong_var, summarize_auc)


def random_case(seed: int, n: int = 120, prevalence: float = 0.3, ties: bool = True):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    y[:2], y[2:4] = 1, 0  # both classes, at least 2 each
    a = rng.normal(size=n) + 0.8 * y
    b = 0.6 * a + rng.normal(size=n) + 0.3 * y  # correlated with a, as two models on the same breasts
    if ties:  # coarse scores: many ties, within and across classes
        a, b = np.round(a, 1), np.round(b, 1)
    return y, a, b


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_with_ties(seed):
    y, a, _ = random_case(seed)
    assert auc(y, a) == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert auc(y.astype(bool), np.round(a)) == pytest.approx(roc_auc_score(y, np.round(a)), abs=1e-12)


def test_auc_one_class_is_nan_with_reason():
    with pytest.warns(RuntimeWarning, match="0 negative"):
        assert np.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))
    with pytest.warns(RuntimeWarning, match="at least 2"):
        assert np.isnan(delong_var([1, 0, 0], [0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="0/1"):
        auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="nan"):
        auc([0, 1], [0.1, np.nan])


def test_delong_hand_computed_three_by_three():
    # Positives X = (0.8, 0.6, 0.4), negatives Y = (0.5, 0.4, 0.1); a tie at 0.4 counts 1/2.
    # V10 (share of negatives below each positive): 0.8 -> 3/3, 0.6 -> 3/3, 0.4 -> (1 + 1/2)/3 = 1/2.
    # V01 (share of positives above each negative): 0.5 -> 2/3, 0.4 -> (2 + 1/2)/3 = 5/6, 0.1 -> 1.
    # AUC = mean V10 = mean V01 = 5/6.
    # S10 = var(1, 1, 1/2; ddof 1) = ((1/6)^2 + (1/6)^2 + (1/3)^2) / 2 = 1/12
    # S01 = var(2/3, 5/6, 1; ddof 1) = ((1/6)^2 + 0 + (1/6)^2) / 2 = 1/36
    # Var = S10/m + S01/n = 1/36 + 1/108 = 1/27.
    y = [1, 1, 1, 0, 0, 0]
    s = [0.8, 0.6, 0.4, 0.5, 0.4, 0.1]
    assert auc(y, s) == pytest.approx(5 / 6)
    assert delong_var(y, s) == pytest.approx(1 / 27)
    z = 1.959963984540054
    lo, hi = delong_ci(y, s)
    assert lo == pytest.approx(5 / 6 - z * np.sqrt(1 / 27)) and hi == 1.0  # plain CI, clipped at 1
    # Logit CI: logit(5/6) = log 5, half-width z * se / (5/6 * 1/6).
    half = z * np.sqrt(1 / 27) / (5 / 36)
    expit = lambda t: 1 / (1 + np.exp(-t))  # noqa: E731
    assert delong_ci(y, s, transform="logit") == pytest.approx((expit(np.log(5) - half), expit(np.log(5) + half)))


@pytest.mark.parametrize("seed", range(6))
def test_delong_matches_pauc(seed):
    y, a, b = random_case(seed, n=60 + 40 * seed, ties=seed % 2 == 0)
    ra, rb = pauc.ROC(y, a, direction="<"), pauc.ROC(y, b, direction="<")
    assert delong_var(y, a) == pytest.approx(pauc.var(ra), rel=1e-10)
    lo, hi = pauc.ci_auc(ra)
    assert delong_ci(y, a) == pytest.approx((max(lo, 0.0), min(hi, 1.0)), rel=1e-9)
    test = delong_paired_test(y, a, b)
    ref = pauc.compare(ra, rb)
    assert (test.auc_a, test.auc_b) == pytest.approx((ra.auc, rb.auc), abs=1e-12)
    assert test.diff == pytest.approx(ref.estimate, abs=1e-12)
    assert test.z == pytest.approx(ref.stat, rel=1e-9)
    assert test.p_value == pytest.approx(ref.p_value, rel=1e-6, abs=1e-12)


def test_delong_paired_test_identical_and_swapped():
    y, a, b = random_case(3)
    same = delong_paired_test(y, a, a)
    assert same.diff == 0 and same.z == 0 and same.p_value == 1
    fwd, back = delong_paired_test(y, a, b), delong_paired_test(y, b, a)
    assert back.z == pytest.approx(-fwd.z) and back.p_value == pytest.approx(fwd.p_value)
    auc_a, auc_b, diff, z, p = fwd  # also unpacks as the plain 5-tuple
    assert 0 <= p <= 1 and diff == pytest.approx(auc_a - auc_b)


def test_bootstrap_ci_contains_auc_and_shrinks_with_n():
    widths = []
    for n in (60, 600):
        y, a, _ = random_case(7, n=n, ties=False)
        lo, hi = bootstrap_ci(y, a, np.arange(n), n_boot=500, seed=1)
        assert lo <= auc(y, a) <= hi
        widths.append(hi - lo)
    assert widths[1] < 0.6 * widths[0]  # ~ 1/sqrt(10) in theory


def test_bootstrap_is_reproducible_and_counts_skips():
    y, a, _ = random_case(2, n=120)
    groups = np.arange(120) // 2
    assert bootstrap_ci(y, a, groups, n_boot=300, seed=5) == bootstrap_ci(y, a, groups, n_boot=300, seed=5)
    # Few positives: some resamples have none; they are skipped with a warning, the CI is still defined.
    y_rare = np.zeros(30, dtype=int)
    y_rare[:2] = 1
    with pytest.warns(RuntimeWarning, match="lacked a class"):
        lo, hi = bootstrap_ci(y_rare, np.linspace(0, 1, 30), n_boot=300)
    assert 0 <= lo <= hi <= 1


def test_cluster_bootstrap_resamples_whole_patients():
    # Two patients, each with one positive and one negative breast.
    #   patient 0: positive 1.0, negative 0.0 (ranked right);  patient 1: positive 0.2, negative 0.8 (wrong).
    # Drawing patients, a resample is {0,0} -> AUC 1, {1,1} -> 0, or {0,1} -> 3/4 (pairs 1>0, 1>0.8, 0.2>0,
    # 0.2<0.8). Drawing single breasts could also give e.g. positive 0.2 against negatives {0, 0.8}: 1/2.
    y = np.array([1, 0, 1, 0])
    s = np.array([1.0, 0.0, 0.2, 0.8])
    by_patient = bootstrap_aucs(y, s, groups=["p0", "p0", "p1", "p1"], n_boot=400, seed=0)
    assert not np.isnan(by_patient).any()  # every patient brings both classes
    assert set(np.round(by_patient, 12)) == {0.0, 0.75, 1.0}
    by_breast = bootstrap_aucs(y, s, groups=None, n_boot=400, seed=0)
    assert not set(np.round(by_breast[~np.isnan(by_breast)], 12)) <= {0.0, 0.75, 1.0}


def test_cluster_bootstrap_of_duplicated_breasts_equals_breast_bootstrap():
    # Each patient holds two identical copies of a breast. Resampling patients is then the same as resampling
    # the de-duplicated breasts (the copies only double every weight); resampling breasts is not.
    y, a, _ = random_case(4, n=50)
    y2, a2, patient = np.repeat(y, 2), np.repeat(a, 2), np.repeat(np.arange(50), 2)
    single = bootstrap_aucs(y, a, None, n_boot=200, seed=3)
    np.testing.assert_allclose(bootstrap_aucs(y2, a2, patient, n_boot=200, seed=3), single, atol=1e-12)
    naive = bootstrap_aucs(y2, a2, None, n_boot=200, seed=3)
    assert np.nanstd(naive) < 0.85 * np.nanstd(single)  # ignoring the clusters understates uncertainty


def test_weighted_bootstrap_auc_equals_auc_of_explicit_resample():
    y, a, _ = random_case(9, n=30)
    groups = np.arange(30) // 3
    rng = np.random.default_rng(0)
    # Re-derive the first resample by hand from the same random stream.
    counts = rng.multinomial(10, np.full(10, 0.1), size=1)[0]
    idx = np.concatenate([np.flatnonzero(groups == g) for g in range(10) for _ in range(counts[g])])
    expected = roc_auc_score(y[idx], a[idx]) if len(set(y[idx])) == 2 else np.nan
    got = bootstrap_aucs(y, a, groups, n_boot=1, seed=0)[0]
    assert got == pytest.approx(expected, abs=1e-12, nan_ok=True)


def test_summarize_auc_row():
    y, a, _ = random_case(1, n=200)
    groups = np.arange(200) // 2
    row = summarize_auc(y, a, groups, n_boot=300)
    assert row["auc"] == pytest.approx(roc_auc_score(y, a))
    assert row["n_pos"] + row["n_neg"] == 200 and row["n_pos"] == y.sum() and row["n_patients"] == 100
    assert row["delong_lo"] < row["auc"] < row["delong_hi"]
    assert row["boot_lo"] < row["auc"] < row["boot_hi"]
    assert row["delong_se"] == pytest.approx(np.sqrt(delong_var(y, a)))
