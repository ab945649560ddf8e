"""Per-epoch negative downsampling and batched window augmentation."""
import numpy as np
import torch

import pandas as pd
import pytest

from mvmammo.data import augment
from mvmammo.data.sampler import SamplingError, batches, epoch_rows, subsample_rows


def _labels(n_pos_b=10, n_pos_m=6, n_both=3, n_neg=100):
    lab = np.zeros((n_pos_b + n_pos_m + n_both + n_neg, 2), dtype=int)
    lab[:n_pos_b, 0] = 1
    lab[n_pos_b:n_pos_b + n_pos_m, 1] = 1
    lab[n_pos_b + n_pos_m:n_pos_b + n_pos_m + n_both] = 1
    return lab


def test_epoch_composition_as_paper():
    lab = _labels()
    rows = np.arange(len(lab)) + 1000
    pos = set(rows[lab.max(1) > 0])
    seen_neg = set()
    for epoch in range(5):
        order = epoch_rows(rows, lab, seed=0, epoch=epoch)
        assert len(order) == len(set(order)) == 2 * len(pos)  # no repeats within an epoch
        assert pos <= set(order)  # every labelled breast, every epoch
        neg = set(order) - pos
        assert len(neg) == len(pos)
        seen_neg |= neg
    assert len(seen_neg) > 19 * 2  # negatives are drawn afresh each epoch, not fixed
    a = epoch_rows(rows, lab, seed=0, epoch=3)
    assert np.array_equal(a, epoch_rows(rows, lab, seed=0, epoch=3))  # a pure function of (seed, epoch)
    assert not np.array_equal(a, epoch_rows(rows, lab, seed=1, epoch=3))


def _exam_table():
    """13 exams of 2 breasts (rows 2e = L, 2e + 1 = R): exams 0-2 biopsied, 3-12 not.

    Exam 0: L benign; exam 1: R malignant; exam 2: L benign, R benign + malignant. So an epoch at
    neg_ratio 1 has 3 + 3 exams = 12 breasts: 4 positive (0L, 1R, 2L, 2R) and 8 negative (0R, 1L and the
    6 breasts of the 3 drawn label-free exams), 1 : 2.
    """
    index = pd.DataFrame({"patient_id": [f"P{e // 2}" for e in range(13) for _ in "LR"],  # 2 exams per patient
                          "exam_id": [f"E{e % 2}" for e in range(13) for _ in "LR"]})
    lab = np.zeros((26, 2), dtype=int)
    lab[0, 0] = 1
    lab[3, 1] = 1
    lab[4, 0] = 1
    lab[5] = 1
    return index, lab


def test_exam_sampling_counts_by_hand():
    index, lab = _exam_table()
    rows = np.arange(26)
    positive = set(np.flatnonzero(lab.max(1) > 0))
    assert positive == {0, 3, 4, 5}
    seen = set()
    for epoch in range(6):
        order = epoch_rows(rows, lab, seed=0, epoch=epoch, neg_ratio=1.0, sampling="exam", index=index)
        assert len(order) == len(set(order)) == 12
        assert set(range(6)) <= set(order)  # both breasts of every biopsied exam
        assert len(positive & set(order)) == 4 and len(set(order) - positive) == 8  # 4 : 8 breasts
        exams = set(order // 2)
        assert len(exams) == 6 and all({2 * e, 2 * e + 1} <= set(order) for e in exams)  # whole exams only
        seen |= exams - {0, 1, 2}
    assert len(seen) > 3  # the label-free exams are drawn afresh each epoch
    again = epoch_rows(rows, lab, seed=0, epoch=4, sampling="exam", index=index)
    assert np.array_equal(again, epoch_rows(rows, lab, seed=0, epoch=4, sampling="exam", index=index))
    # neg_ratio 2: 3 + 6 exams; breast-level on the same table: 4 positive + 4 negative breasts.
    assert len(epoch_rows(rows, lab, 0, 0, 2.0, "exam", index)) == 18
    assert len(epoch_rows(rows, lab, 0, 0, 1.0, "breast")) == 8
    # A subset of rows (e.g. train minus a hold-out): exams are formed from the rows given.
    sub = np.array([0, 1, 6, 7, 8, 9, 10])
    assert sorted(epoch_rows(sub, lab[sub], 0, 0, 1.0, "exam", index)) in ([0, 1, 6, 7], [0, 1, 8, 9], [0, 1, 10])


def test_exam_id_is_per_patient_and_errors_are_one_line():
    index, lab = _exam_table()
    # Exams E0/E1 repeat across patients: (patient, exam) is the key, so there are 13 exams, not 2.
    order = epoch_rows(np.arange(26), lab, 0, 0, 10.0, "exam", index)
    assert len(order) == 26
    with pytest.raises(SamplingError, match="exam_id.*data.sampling=breast"):
        epoch_rows(np.arange(26), lab, 0, 0, 1.0, "exam", index.drop(columns="exam_id"))
    with pytest.raises(SamplingError, match="use one of exam, breast"):
        epoch_rows(np.arange(26), lab, 0, 0, 1.0, "patient", index)


def test_lca_subsample_takes_a_fraction_of_both_kinds():
    index, lab = _exam_table()
    order = epoch_rows(np.arange(26), lab, 0, 0, 1.0, "exam", index)
    # 3 positive and 3 negative exams: a third of each is one exam of each kind, both breasts.
    sub = subsample_rows(order, lab[order], 1 / 3, seed=0, epoch=0, index=index)
    assert len(sub) == 4 and len(set(sub // 2)) == 2
    assert lab[sub].max(1).any() and not lab[sub].max(1).all()
    assert set(sub) <= set(order)
    other = [tuple(subsample_rows(order, lab[order], 1 / 3, seed=0, epoch=e, index=index)) for e in range(1, 8)]
    assert len(set(other)) > 1  # re-drawn per epoch
    # Breast units: 10% of 100 positives and 300 negatives = 10 + 30 breasts.
    big = np.zeros((400, 2), dtype=int)
    big[:100, 1] = 1
    sub = subsample_rows(np.arange(400), big, 0.1, seed=1, epoch=0)
    assert len(sub) == 40 and (big[sub, 1] == 1).sum() == 10


def test_fewer_negatives_than_positives_takes_all():
    lab = _labels(n_neg=5)
    order = epoch_rows(np.arange(len(lab)), lab, seed=0, epoch=0)
    assert len(order) == len(lab)


def test_batches_cover_order():
    order = np.arange(10)
    assert [len(b) for b in batches(order, 4)] == [4, 4, 2]
    assert [len(b) for b in batches(order, 4, drop_last=True)] == [4, 4]


def test_boxes_stay_inside_and_borders_move_independently():
    gen = torch.Generator().manual_seed(0)
    m = 7.0
    boxes = augment.sample_boxes(20000, m, gen)
    y0, y1, x0, x1 = boxes.unbind(1)
    # Inside the cached context: no edge beyond m px outside the centre window.
    assert y0.min() >= -m - 1e-5 and x0.min() >= -m - 1e-5 and y1.max() <= m + 1e-5 and x1.max() <= m + 1e-5
    # Each border covers the whole range: moved out by ~m (edge at -m / +m) and in by ~m (edge near +m / -m).
    for edge, sign in ((y0, -1), (y1, 1), (x0, -1), (x1, 1)):
        assert (sign * edge).max() > 0.95 * m and (sign * edge).min() < -0.8 * m
    # Size noise per border: height and width change independently (a fixed aspect would give corr 1), each
    # by the sum of two U[-m, m] moves: variance 2 m^2 / 3.
    dh, dw = y1 - y0, x1 - x0
    assert abs(float(torch.corrcoef(torch.stack([dh, dw]))[0, 1])) < 0.03
    assert abs(float(dh.var()) - 2 * m * m / 3) < 0.05 * 2 * m * m / 3
    assert abs(float(dh.mean())) < 0.1 and abs(float(dw.mean())) < 0.1
    # Vertical and horizontal draws are independent. The centre moves by the shift (|dy| <= m) plus half
    # the difference of the two border moves: at most m + m / 2 (dy = m - 0, e_bottom = 0, e_top = -m).
    assert abs(float(torch.corrcoef(torch.stack([y0, x0]))[0, 1])) < 0.03
    cy = (y0 + y1) / 2
    assert cy.abs().max() <= 1.5 * m + 1e-5 and cy.abs().max() > 1.2 * m


def _source_coords(lo, hi, n):
    """Pixel coordinates sampled by the n output pixels of a box with edges [lo, hi) (pixel centres)."""
    return lo + (np.arange(n) + 0.5) * (hi - lo) / n - 0.5


def _cubic_weights(t, a=-0.75):
    """Keys' cubic convolution kernel (torch's bicubic uses a = -0.75) at offsets t."""
    t = np.abs(t)
    return np.where(t <= 1, (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1,
                    np.where(t < 2, a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a, 0.0))


def _resample_matrix(coords, size):
    """(n, size) interpolation matrix of 1-D bicubic sampling at coords, indices clamped to the edge."""
    m = np.zeros((len(coords), size))
    for i, c in enumerate(coords):
        base = int(np.floor(c))
        for k in range(base - 1, base + 3):
            m[i, min(max(k, 0), size - 1)] += _cubic_weights(c - k)
    return m


def test_crop_known_answer():
    hp, wp, h, w = 30, 26, 16, 12
    box = torch.tensor([[-3.0, 5.0, 2.0, -1.5]])  # top edge 3 px up, bottom 5 down, left 2 in, right 1.5 in
    my, mx = (hp - h) // 2, (wp - w) // 2
    rows = _source_coords(my - 3.0, my + h + 5.0, h)
    cols = _source_coords(mx + 2.0, mx + w - 1.5, w)
    # Geometry: bilinear sampling of a ramp (value = row + 100 column) returns the sampled coordinates.
    yy, xx = np.meshgrid(np.arange(hp), np.arange(wp), indexing="ij")
    ramp = torch.tensor(yy + 100.0 * xx, dtype=torch.float32)[None, None]
    out = augment.crop_resize(ramp, (h, w), box, "bilinear")[0, 0].double().numpy()
    assert np.allclose(out, rows[:, None] + 100 * cols[None, :], atol=2e-3)
    # Bicubic: the separable cubic-convolution sum, written out by hand, on a random image.
    img = np.random.default_rng(0).uniform(0, 1000, (hp, wp))
    expect = _resample_matrix(rows, hp) @ img @ _resample_matrix(cols, wp).T
    got = augment.crop_resize(torch.tensor(img, dtype=torch.float32)[None, None], (h, w), box)[0, 0].double()
    assert np.allclose(got.numpy(), expect, atol=5e-3), np.abs(got.numpy() - expect).max()


def test_bicubic_is_the_default_resampling():
    # A box with a half-pixel shift on an image with curvature: bicubic and bilinear differ, and the
    # default (make_views' and the BatchMaker's) is bicubic.
    from mvmammo.training.inputs import BatchMaker

    assert augment.RESIZE_MODE == "bicubic" and BatchMaker.__dataclass_fields__["resize_mode"].default == "bicubic"
    x = torch.rand(1, 1, 20, 16)
    box = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    cubic = augment.crop_resize(x, (14, 10), box)
    assert torch.allclose(cubic, augment.crop_resize(x, (14, 10), box, "bicubic"))
    assert not torch.allclose(cubic, augment.crop_resize(x, (14, 10), box, "bilinear"), atol=1e-3)


def test_centre_window_is_exact_slice():
    x = torch.arange(2 * 3 * 20 * 16, dtype=torch.float32).reshape(2, 3, 20, 16)
    out = augment.crop_resize(x, (14, 10), None)
    assert torch.equal(out, x[:, :, 3:17, 3:13])


def test_zero_noise_box_reproduces_centre():
    x = torch.rand(3, 1, 20, 16)
    boxes = torch.zeros(3, 4)
    for mode in ("bicubic", "bilinear"):
        out = augment.crop_resize(x, (14, 10), boxes, mode)
        assert torch.allclose(out, x[:, :, 3:17, 3:13], atol=1e-5), mode
    odd = torch.rand(1, 1, 21, 17)  # odd margins: the centre window starts at (21 - 14) // 2 = 3
    assert torch.allclose(augment.crop_resize(odd, (14, 10), torch.zeros(1, 4)), odd[:, :, 3:17, 3:13], atol=1e-5)


def test_shift_moves_content():
    # A pure shift by an integer number of pixels equals a shifted slice (bicubic weights at integer
    # positions are (0, 1, 0, 0)): down 2, left 1.
    x = torch.rand(1, 1, 20, 16)
    out = augment.crop_resize(x, (14, 10), torch.tensor([[2.0, 2.0, -1.0, -1.0]]))
    assert torch.allclose(out, x[:, :, 5:19, 2:12], atol=1e-5)


def test_augmentation_keeps_shape_and_stays_inside_image():
    # A window whose margin is filled with NaN: any sample outside the inner image + margin would show NaN.
    m = 4
    img = torch.rand(6, 3, 32 + 2 * m, 24 + 2 * m) * 65535
    gen = torch.Generator().manual_seed(1)
    out = augment.make_views(img, (32, 24), m, train=True, generator=gen)
    assert out.shape == (6, 3, 32, 24)
    assert torch.isfinite(out).all()
    # Only the padded image is available: poison everything beyond it and check nothing leaks in.
    poisoned = torch.full((6, 3, 32 + 2 * m + 8, 24 + 2 * m + 8), float("nan"))
    poisoned[:, :, 4:-4, 4:-4] = img
    boxes = augment.sample_boxes(6, m, torch.Generator().manual_seed(2))
    out2 = augment.crop_resize(poisoned, (32, 24), boxes)
    assert torch.isfinite(out2).all()


def test_normalise_image_channel_and_heatmaps():
    x = torch.rand(4, 3, 16, 12) * 4095
    x[:, 1:] = torch.rand(4, 2, 16, 12) * 65535
    y = augment.normalise(x)
    assert torch.allclose(y[:, 0].mean(dim=(1, 2)), torch.zeros(4), atol=1e-4)
    assert torch.allclose(y[:, 0].std(dim=(1, 2)), torch.ones(4), atol=1e-3)
    assert y[:, 1:].min() >= 0 and y[:, 1:].max() <= 1
