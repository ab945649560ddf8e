"""Per-epoch negative downsampling and batched window augmentation."""
import numpy as np
import torch

from mvmammo.data import augment
from mvmammo.data.sampler import batches, epoch_rows


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


def test_fewer_negatives_than_positives_takes_all():
    lab = _labels(n_neg=5)
    order = epoch_rows(np.arange(len(lab)), lab, seed=0, epoch=0)
    assert len(order) == len(lab)


def test_batches_cover_order():
    order = np.arange(10)
    assert [len(b) for b in batches(order, 4)] == [4, 4, 2]
    assert [len(b) for b in batches(order, 4, drop_last=True)] == [4, 4]


def test_boxes_stay_inside():
    gen = torch.Generator().manual_seed(0)
    m = 7
    boxes = augment.sample_boxes(5000, m, gen)
    ds, dy, dx = boxes.unbind(1)
    assert ds.abs().max() <= m
    assert (dy.abs() + ds.clamp(min=0) / 2 <= m + 1e-5).all()
    assert (dx.abs() + ds.clamp(min=0) / 2 <= m + 1e-5).all()
    assert ds.min() < -0.9 * m and ds.max() > 0.9 * m  # the full range is used


def test_centre_window_is_exact_slice():
    x = torch.arange(2 * 3 * 20 * 16, dtype=torch.float32).reshape(2, 3, 20, 16)
    out = augment.crop_resize(x, (14, 10), None)
    assert torch.equal(out, x[:, :, 3:17, 3:13])


def test_zero_noise_box_reproduces_centre():
    x = torch.rand(3, 1, 20, 16)
    boxes = torch.zeros(3, 3)
    out = augment.crop_resize(x, (14, 10), boxes)
    assert torch.allclose(out, x[:, :, 3:17, 3:13], atol=1e-5)


def test_shift_moves_content():
    # A pure shift by an integer number of pixels equals a shifted slice.
    x = torch.rand(1, 1, 20, 16)
    out = augment.crop_resize(x, (14, 10), torch.tensor([[0.0, 2.0, -1.0]]))
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
