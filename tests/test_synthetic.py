"""The synthetic two-view cohort: determinism, geometry, rates, intensities, oracle, splits, table contract."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from mvmammo.data import exams
from mvmammo.data.images import read_png
from mvmammo.data.synthetic import PRESETS, compute_oracle, generate_cohort, load_oracle
from mvmammo.data.synthetic.breast import make_breast
from mvmammo.data.synthetic.cohort import make_tasks

SMALL = (64, 48)


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    summary = generate_cohort(out, preset="paper", breasts=300, size_cc=SMALL, size_mlo=SMALL, seed=3,
                              heatmaps=True, workers=2, progress=False)
    return out, summary


def _table(out):
    return pd.read_csv(out / "exams.csv", dtype={"patient_id": str, "exam_id": str})


def test_table_validates_and_splits_by_patient(paper):
    out, summary = paper
    df = exams.read_table(out / "exams.csv")
    assert exams.validate(df) == []
    assert len(df) == 300 and summary["patients"] == 150
    assert (df.groupby("patient_id")["split"].nunique() == 1).all()
    assert (df.groupby("patient_id")["side"].apply(lambda s: sorted(s)) .map(tuple) == ("L", "R")).all()
    assert (df.groupby("patient_id")["exam_id"].nunique() == 1).all()
    shares = df.groupby("patient_id")["split"].first().value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.6, abs=0.02) and shares["test"] == pytest.approx(0.2, abs=0.02)
    for col in exams.HEATMAP_COLUMNS:
        assert col in df.columns


def test_deterministic_and_independent_of_workers(tmp_path):
    kw = dict(preset="complementary", breasts=10, size_cc=SMALL, size_mlo=(72, 40), seed=11, progress=False)
    a = generate_cohort(tmp_path / "a", workers=1, **kw)
    b = generate_cohort(tmp_path / "b", workers=2, **kw)
    assert a["oracle"] == b["oracle"]
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.png"))
    assert files_a == files_b and len(files_a) == 10 * 6
    for rel in files_a + [p for p in ("exams.csv", "lesions.csv", "oracle.json")]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    c = generate_cohort(tmp_path / "c", workers=1, **{**kw, "seed": 12})
    assert (tmp_path / "c" / files_a[0]).read_bytes() != (tmp_path / "a" / files_a[0]).read_bytes()
    assert c["cached"] is False


def test_cache_returns_stored_summary_and_regenerates_on_change(tmp_path):
    kw = dict(preset="balanced", breasts=6, size_cc=SMALL, size_mlo=SMALL, seed=0, workers=1, progress=False)
    first = generate_cohort(tmp_path, **kw)
    stamp = (tmp_path / "exams.csv").stat().st_mtime_ns
    again = generate_cohort(tmp_path, **kw)
    assert again["cached"] is True and again["oracle"] == first["oracle"]
    assert (tmp_path / "exams.csv").stat().st_mtime_ns == stamp
    other = generate_cohort(tmp_path, **{**kw, "breasts": 4, "heatmaps": False})
    assert other["cached"] is False
    assert len(list((tmp_path / "images").glob("*.png"))) == 8  # stale images of the 6-breast run removed
    assert not (tmp_path / "heatmaps").exists()
    assert json.loads((tmp_path / "cohort.json").read_text())["args"]["breasts"] == 4


def test_intensities_background_and_heatmap_support(paper):
    out, _ = paper
    df = _table(out)
    for _, r in df.head(20).iterrows():
        for v in ("cc", "mlo"):
            img = read_png(out / r[f"{v}_path"])
            assert img.dtype == np.uint16 and img.shape == SMALL
            assert img.max() <= 4095 and img.max() > 1500
            breast = img > 0
            assert 0.3 < breast.mean() < 0.95
            # Background exactly 0: one connected breast, touching the chest wall (column 0), nipple side clear.
            _, n = ndimage.label(breast)
            assert n == 1
            assert breast[:, 0].any() and not breast[:, -1].any()
            assert img[0, -1] == 0 and img[-1, -1] == 0
            for ch in ("benign", "malignant"):
                hm = read_png(out / r[f"{v}_heatmap_{ch}"])
                assert hm.shape == img.shape
                assert not hm[~breast].any()  # heatmaps live inside the breast only


def test_lesion_projections_agree_on_the_nipple_axis(tmp_path):
    # Different image sizes for the two views: the agreement must hold in normalised units.
    generate_cohort(tmp_path, preset="balanced", breasts=80, size_cc=(96, 72), size_mlo=(112, 64), seed=4,
                    heatmaps=False, workers=1, progress=False)
    df, les = _table(tmp_path), pd.read_csv(tmp_path / "lesions.csv")
    assert len(les) > 15
    m = les.merge(df[["breast_index", "cc_nipple_col", "mlo_nipple_col"]], on="breast_index")
    d_cc = (m.cc_nipple_col - m.cc_col) / m.cc_nipple_col  # distance from the nipple / breast depth
    d_mlo = (m.mlo_nipple_col - m.mlo_col) / m.mlo_nipple_col
    np.testing.assert_allclose(d_cc, d_mlo, atol=0.01)
    np.testing.assert_allclose(d_cc, 1 - m.x, atol=0.01)  # and it is the 3-D nipple-axis coordinate
    # The vertical positions are different projections (CC: y; MLO: oblique mix of y and z), so they differ.
    assert np.abs((m.cc_row / 96) - (m.mlo_row / 112)).max() > 0.05
    # Every lesion projects inside the breast in both views.
    for _, l in m.iterrows():
        r = df[df.breast_index == l.breast_index].iloc[0]
        for v in ("cc", "mlo"):
            img = read_png(tmp_path / r[f"{v}_path"])
            assert img[int(round(l[f"{v}_row"])), int(round(l[f"{v}_col"]))] > 0


def test_lesion_is_drawn_at_its_projection_only_where_visible():
    base = PRESETS["balanced"]
    task = make_tasks("/nonexistent", base, 40, (96, 72), (96, 72), 7, False)
    # A breast with a malignant lesion; render it with lesions never drawn and always drawn.
    hidden = dataclasses.replace(base, cc=dataclasses.replace(base.cc, obscure=1.0),
                                 mlo=dataclasses.replace(base.mlo, obscure=1.0))
    shown = dataclasses.replace(base, cc=dataclasses.replace(base.cc, obscure=0.0),
                                mlo=dataclasses.replace(base.mlo, obscure=0.0))
    for t in task:
        row_h, les_h, arr_h = make_breast(dataclasses.replace(t, preset=hidden), write=False)
        if row_h["malignant"]:
            break
    row_s, les_s, arr_s = make_breast(dataclasses.replace(t, preset=shown), write=False)
    assert row_h["cc_malignant_visible"] == 0 and row_s["cc_malignant_visible"] == 1
    for v in ("cc", "mlo"):
        diff = arr_s[v].astype(float) - arr_h[v].astype(float)
        assert diff.max() > 100  # the lesion adds brightness ...
        rr, cc = np.unravel_index(np.argmax(diff), diff.shape)
        near = min(np.hypot(rr - l[f"{v}_row"], cc - l[f"{v}_col"]) - 2.8 * l[f"{v}_radius_px"] for l in les_s)
        assert near <= 1.0  # ... at the recorded projection of a lesion, nowhere else


def test_prevalence_and_visibility_rates_follow_the_preset(paper):
    out, summary = paper
    df, les = _table(out), pd.read_csv(out / "lesions.csv")
    pre = PRESETS["paper"]
    assert df.malignant.mean() == pytest.approx(pre.p_malignant, abs=0.06)
    assert df.benign.mean() == pytest.approx(pre.p_benign, abs=0.06)
    assert summary["prevalence"]["malignant"] == pytest.approx(df.malignant.mean())
    assert les.cc_visible.mean() == pytest.approx(1 - pre.cc.obscure, abs=0.07)
    assert les.mlo_visible.mean() == pytest.approx(1 - pre.mlo.obscure, abs=0.09)
    # Breast-level oracle columns agree with the lesion table.
    for v in ("cc", "mlo"):
        vis = les[les.cls == "malignant"].groupby("breast_index")[f"{v}_visible"].max()
        got = df.set_index("breast_index").loc[vis.index, f"{v}_malignant_visible"]
        assert (got.to_numpy() == vis.to_numpy()).all()
    assert (df.loc[df.malignant == 0, ["cc_malignant_visible", "mlo_malignant_visible"]] == 0).all().all()
    # MLO lesions are drawn larger than CC lesions in this preset.
    assert (les.mlo_radius_px > les.cc_radius_px).all()


def test_paper_cue_is_a_train_only_shortcut(paper):
    out, _ = paper
    df = _table(out)
    train, ev = df[df.split == "train"], df[df.split != "train"]
    assert train[train.malignant == 1].mlo_cue.mean() > 0.6
    assert train[train.malignant == 0].mlo_cue.mean() < 0.2
    assert abs(ev[ev.malignant == 1].mlo_cue.mean() - ev[ev.malignant == 0].mlo_cue.mean()) < 0.2
    assert df.cc_cue.sum() == 0


def test_heatmaps_respond_to_visible_lesions_only(paper):
    out, _ = paper
    df, les = _table(out).set_index("breast_index"), pd.read_csv(out / "lesions.csv")
    vals = {0: [], 1: []}
    for _, l in les[les.cls == "malignant"].iterrows():
        for v in ("cc", "mlo"):
            hm = read_png(out / df.loc[l.breast_index, f"{v}_heatmap_malignant"]) / 65535.0
            vals[int(l[f"{v}_visible"])].append(hm[int(round(l[f"{v}_row"])), int(round(l[f"{v}_col"]))])
    assert len(vals[0]) > 10 and len(vals[1]) > 10
    assert np.mean(vals[1]) > 0.4 and np.mean(vals[0]) < 0.15


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_oracle_ordering_per_preset(tmp_path, name):
    s = generate_cohort(tmp_path, preset=name, breasts=200, size_cc=SMALL, size_mlo=SMALL, seed=1,
                        heatmaps=False, workers=1, progress=False)
    df = _table(tmp_path)
    o = compute_oracle(df)["all"]["malignant"]  # all splits: less noise than the test split alone
    cc, mlo, both = o["auc_cc"], o["auc_mlo"], o["auc_both"]
    if name == "cc-only":
        assert cc == pytest.approx(1.0) and mlo == pytest.approx(0.5)
    elif name == "mlo-only":
        assert mlo == pytest.approx(1.0) and cc == pytest.approx(0.5)
    elif name == "complementary":
        assert both > 0.97 and max(cc, mlo) < 0.85 and both - max(cc, mlo) > 0.12
    elif name == "balanced":
        assert abs(cc - mlo) < 0.1 and 0.85 < min(cc, mlo) and both >= max(cc, mlo) and both > 0.97
    elif name == "paper":
        assert cc > mlo + 0.08 and both >= cc
    elif name == "easy":  # every lesion visible in both views: each view alone is perfect
        assert cc == pytest.approx(1.0) and mlo == pytest.approx(1.0) and both == pytest.approx(1.0)
    else:
        pytest.fail(f"no expectation written for preset {name}")
    loaded = load_oracle(tmp_path)
    assert loaded["auc_cc"] == s["oracle"]["auc_cc"] and loaded["split"] == "test"
    assert loaded["malignant"]["auc_both"] == loaded["auc_both"] and "benign" in loaded


def test_cli_synth_prints_oracle_and_validates(tmp_path, capsys):
    from mvmammo.cli import main

    out = tmp_path / "c"
    rc = main(["synth", "--preset", "balanced", "--breasts", "12", "--size", "64", "48", "--seed", "2", "--out",
               str(out), "--no-heatmaps", "--preview", "--workers", "1", "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0 and "oracle malignant AUC" in text and "CC" in text and "MLO" in text
    assert (out / "preview.png").stat().st_size > 10_000
    df = _table(out)
    assert "cc_heatmap_benign" not in df.columns
    assert main(["validate", str(out / "exams.csv")]) == 0


def test_full_size_breast_scales_lesions():
    pre = PRESETS["balanced"]
    small = make_tasks("/nonexistent", pre, 4, (64, 48), (64, 48), 9, False)
    full = make_tasks("/nonexistent", pre, 4, (2677, 1942), (2974, 1748), 9, False)
    for t_s, t_f in zip(small, full):
        row_s, les_s, arr_s = make_breast(t_s, write=False)
        if les_s:
            break
    row_f, les_f, arr_f = make_breast(t_f, write=False)
    assert arr_f["cc"].shape == (2677, 1942) and arr_f["mlo"].shape == (2974, 1748)
    assert arr_f["cc"].max() <= 4095 and arr_f["cc"][0, -1] == 0
    assert row_s["malignant"] == row_f["malignant"] and len(les_s) == len(les_f)
    # Same lesions, same place in image-relative units, radius proportional to the image height.
    for a, b in zip(les_s, les_f):
        assert b["cc_radius_px"] / 2677 == pytest.approx(a["cc_radius_px"] / 64)
        assert b["cc_col"] / 1942 == pytest.approx(a["cc_col"] / 48, rel=1e-6)
