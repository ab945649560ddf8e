"""The heatmap channels sampled straight from the window store's coarse grid (augment.crop_resize_coarse)."""
import torch

from mvmammo.data import augment
from mvmammo.data.store.reader import upsample_heat

HP, WP, F_ = 44, 36, 8          # a cached window and the grid factor
GH, GW = -(-HP // F_), -(-WP // F_)   # 6 x 5 blocks; the last row and column cover fewer than 8 px
SIZE = (24, 16)                 # the window (H, W) inside a 10 px margin


def _grid(seed: int = 0) -> torch.Tensor:
    return torch.rand(3, 2, GH, GW, generator=torch.Generator().manual_seed(seed))


def test_centre_window_is_the_upsampled_grid_cut_to_the_window():
    heat = _grid()
    want = augment.crop_resize(upsample_heat(heat, (HP, WP)), SIZE, None)
    got = augment.crop_resize_coarse(heat, (HP, WP), SIZE, None)
    assert got.shape == (3, 2, *SIZE)
    assert torch.allclose(got, want, atol=1e-6)


def test_a_linear_ramp_is_sampled_exactly_at_the_box_points():
    # Grid value a*i + b*j at block (i, j): the field at px (p, q) is a*((p+1/2)/f - 1/2) + b*((q+1/2)/f - 1/2).
    a, b = 0.03, -0.02
    i = torch.arange(GH, dtype=torch.float32)[:, None]
    j = torch.arange(GW, dtype=torch.float32)[None, :]
    heat = (a * i + b * j).expand(1, 1, GH, GW).clone()
    box = torch.tensor([[-3.0, 2.5, 1.5, -2.0]])  # y0, y1, x0, x1 (cached px)
    got = augment.crop_resize_coarse(heat, (HP, WP), SIZE, box)[0, 0]
    h, w = SIZE
    my, mx = (HP - h) // 2, (WP - w) // 2
    k = torch.arange(h, dtype=torch.float32)[:, None]
    m = torch.arange(w, dtype=torch.float32)[None, :]
    p = my + box[0, 0] + (k + 0.5) * (h + box[0, 1] - box[0, 0]) / h - 0.5  # the px row each output row samples
    q = mx + box[0, 2] + (m + 0.5) * (w + box[0, 3] - box[0, 2]) / w - 0.5
    want = a * ((p + 0.5) / F_ - 0.5) + b * ((q + 0.5) / F_ - 0.5)
    # Inside the grid's first and last block centres the ramp is not clamped by the border.
    inside = ((p + 0.5) / F_ - 0.5 >= 0) & ((p + 0.5) / F_ - 0.5 <= GH - 1) \
        & ((q + 0.5) / F_ - 0.5 >= 0) & ((q + 0.5) / F_ - 0.5 <= GW - 1)
    assert inside.float().mean() > 0.5
    assert torch.allclose(got[inside], want.expand(h, w)[inside], atol=1e-5)


def test_drawn_boxes_stay_close_to_the_two_step_path():
    heat = _grid(1)
    boxes = augment.sample_boxes(3, 10, torch.Generator().manual_seed(2))
    two_step = augment.crop_resize(upsample_heat(heat, (HP, WP)), SIZE, boxes)
    direct = augment.crop_resize_coarse(heat, (HP, WP), SIZE, boxes)
    diff = (direct - two_step).abs()
    # Bicubic of a piecewise-bilinear field against the field itself: small, not zero (values in [0, 1]).
    assert diff.max() < 0.05 and diff.mean() < 0.01
    assert diff.max() > 0


def test_the_box_grid_is_the_one_crop_resize_samples():
    x = torch.rand(2, 1, HP, WP, generator=torch.Generator().manual_seed(3))
    boxes = augment.sample_boxes(2, 10, torch.Generator().manual_seed(4))
    grid = augment.box_grid(boxes, (HP, WP), SIZE)
    want = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert torch.equal(augment.crop_resize(x, SIZE, boxes, "bilinear"), want)
