"""Heatmap speed paths: constant patches computed once (exact), the dense mode (features once per crop), its
footprint pooling against library oracles, its tile rule, and `--mode` through the command."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from test_heatmaps import _breast_image, _tiny_table, tiny_model

from mvmammo.heatmaps.constant import constant_patches
from mvmammo.heatmaps.dense import dense_features, dense_grid_probs, feature_stride, footprint_weights
from mvmammo.heatmaps.grid import grid
from mvmammo.heatmaps.infer import image_heatmaps, image_heatmaps_loop
from mvmammo.models.densenet import DenseNet
from mvmammo.patches.image import prepare
from mvmammo.patches.runs import write_model


pytestmark = pytest.mark.usefixtures("one_thread")


class Counting(torch.nn.Module):
    """Wraps a patch model and counts the patches it is given (its batch rows)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.cfg, self.seen = model, model.cfg, 0

    def forward(self, x):
        self.seen += x.shape[0]
        return self.model(x)


def test_constant_patches_on_a_hand_made_image():
    img = torch.zeros(6, 7)
    img[0:3, 0:3] = 5.0          # a constant block: the patch at (0, 0) of size 3 is constant (value 5)
    img[4, 6] = 1.0              # one odd pixel: patches covering (4, 6) are not constant
    rows, cols = np.array([0, 1, 3]), np.array([0, 2, 4])
    const, value = constant_patches(img, rows, cols, 3)
    brute = np.array([[bool((img[y:y + 3, x:x + 3] == img[y, x]).all()) for x in cols] for y in rows])
    np.testing.assert_array_equal(const.numpy(), brute)
    assert const[0, 0] and value[0, 0] == 5.0          # inside the block
    assert not const[0, 1]                             # straddles the block's edge (5 | 0)
    assert const[1, 2] and value[1, 2] == 0.0          # rows 1-3, cols 4-6: all zeros
    assert not const[2, 2]                             # rows 3-5, cols 4-6 hold the odd pixel


def _image_with_background(h=160, w=120) -> np.ndarray:
    """The textured half-disk of test_heatmaps in the top-left of a larger image whose breast mask box keeps
    a wide flat band: the crop's right and bottom parts are one value after standardisation."""
    img = np.zeros((h, w), np.uint16)
    img[:120, :90] = _breast_image()
    return img


def test_constant_patches_are_computed_once_and_match_the_loop():
    model = tiny_model()
    img = _image_with_background()
    box = (0, 0) + img.shape                           # the whole image: corners of pure background
    prep = prepare(img, 32, box=box)
    rows, cols = grid(prep.image.shape, 32, 10)
    const, _ = constant_patches(torch.from_numpy(prep.image), rows, cols, 32)
    n_const = int(const.sum())
    assert n_const > 20                                # the test needs many constant patches

    counting = Counting(model)
    from mvmammo.heatmaps import infer

    fast = infer.grid_probs(counting, prep, 32, 10, batch_size=16)
    probs, _, _, computed = fast
    assert counting.seen == computed == len(rows) * len(cols) - n_const + 1   # one background value
    counting.seen = 0
    plain, *_ = infer.grid_probs(counting, prep, 32, 10, batch_size=16, dedup=False)
    assert counting.seen == len(rows) * len(cols)
    np.testing.assert_allclose(probs.numpy(), plain.numpy(), atol=1e-5)
    # And through the image function: the heatmap equals the per-patch loop's.
    res = image_heatmaps(model, img, patch=32, stride=10, batch_size=16)
    ref = image_heatmaps_loop(model, img, patch=32, stride=10)
    assert res.computed < res.patches == ref.patches
    np.testing.assert_allclose(res.probs, ref.probs, atol=1e-5)
    np.testing.assert_allclose(res.malignant, ref.malignant, atol=1e-5)
    np.testing.assert_allclose(res.benign, ref.benign, atol=1e-5)


def test_footprint_weights_match_grid_sample():
    """The separable pooling = bilinear samples at the bins' centres (grid_sample, border clamp), averaged."""
    torch.manual_seed(0)
    fmap = torch.randn(3, 9, 7, dtype=torch.float64)
    patch, stride = 32, 8
    rows, cols = np.array([0, 5, 13, 40]), np.array([0, 9, 24])    # boxes inside the 72 x 56 input
    g = patch // stride
    wy = footprint_weights(rows, patch, stride, 9).double()
    wx = footprint_weights(cols, patch, stride, 7).double()
    ours = torch.einsum("ia,cab,jb->ijc", wy, fmap, wx)
    for i, y in enumerate(rows):
        for j, x in enumerate(cols):
            uy = y / stride - 0.5 + (torch.arange(g, dtype=torch.float64) + 0.5)   # feature coordinates
            ux = x / stride - 0.5 + (torch.arange(g, dtype=torch.float64) + 0.5)
            # grid_sample (align_corners=False): cell k's centre is at normalised (2k + 1) / n - 1.
            gy, gx = (2 * uy + 1) / 9 - 1, (2 * ux + 1) / 7 - 1
            pts = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1)[None]     # (1, g, g, 2) as (x, y)
            s = F.grid_sample(fmap[None], pts, mode="bilinear", padding_mode="border", align_corners=False)
            np.testing.assert_allclose(ours[i, j].numpy(), s[0].mean((1, 2)).numpy(), atol=1e-12)


def test_footprint_weights_match_roi_align_where_torchvision_is_present():
    try:  # a torchvision built for another torch imports but fails to register its operators (RuntimeError)
        import torchvision.ops as ops
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"torchvision unusable beside this torch: {str(e)[:80]}")
    torch.manual_seed(1)
    fmap = torch.randn(1, 2, 9, 7)
    rows, cols = np.array([0, 5, 40]), np.array([3, 24])
    boxes = torch.tensor([[0, x, y, x + 32, y + 32] for y in rows for x in cols], dtype=torch.float32)
    ref = ops.roi_align(fmap, boxes, output_size=4, spatial_scale=1 / 8, sampling_ratio=1, aligned=True)
    ours = torch.einsum("ia,cab,jb->ijc", footprint_weights(rows, 32, 8, 9), fmap[0], footprint_weights(cols, 32, 8, 7))
    np.testing.assert_allclose(ours.reshape(-1, 2).numpy(), ref.mean((2, 3)).numpy(), atol=1e-6)


def test_dense_on_one_patch_is_the_patch_model():
    """An image that is exactly one patch: the footprint samples are its own feature cells' centres, so the
    dense mode's pooling is the network's global average pool."""
    model = tiny_model()
    assert feature_stride(model) == 8 and feature_stride(DenseNet()) == 32   # DenseNet-121: stride 32
    rng = np.random.default_rng(3)
    img = (1000 + 400 * rng.uniform(size=(32, 32))).astype(np.uint16)
    prep = prepare(img, 32, box=(0, 0, 32, 32))
    probs, rows, cols = dense_grid_probs(model, prep, 32, 10)
    assert probs.shape == (1, 1, 4)
    with torch.no_grad():
        ref = F.softmax(model(torch.from_numpy(prep.image)[None, None]), 1)[0]
    np.testing.assert_allclose(probs[0, 0].numpy(), ref.numpy(), atol=1e-6)


def test_dense_tiles_line_up_with_the_untiled_map():
    """Strips with a halo wider than the tiny model's reach (receptive field ~39 px) give the untiled map."""
    model = tiny_model()
    x = torch.randn(203, 50)
    whole = dense_features(model, x)
    tiled = dense_features(model, x, max_pixels=50 * 120, halo=40, patch=32)   # strips of 40 rows + 2 x 40
    assert tiled.shape == whole.shape
    np.testing.assert_allclose(tiled.numpy(), whole.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="raise max_pixels"):
        dense_features(model, x, max_pixels=50 * 60, halo=40, patch=32)


def test_dense_heatmap_is_close_to_the_exact_one_and_tagged():
    model = tiny_model()
    img = _breast_image()
    dense = image_heatmaps(model, img, patch=32, stride=10, mode="dense")
    exact = image_heatmaps(model, img, patch=32, stride=10)
    assert dense.mode == "dense" and exact.mode == "patches" and dense.probs.shape == exact.probs.shape
    assert dense.benign.shape == img.shape
    diff = np.abs(dense.malignant - exact.malignant)
    assert 0 < diff.max() < 0.2          # an approximation: different, but of the same map
    with pytest.raises(ValueError, match="use one of patches, dense"):
        image_heatmaps(model, img, patch=32, stride=10, mode="sparse")


def test_heatmaps_command_mode_dense_is_recorded(tmp_path, capsys):
    from mvmammo.cli import main
    from mvmammo.data import exams

    table = _tiny_table(tmp_path, n=1)
    write_model(tmp_path / "run", tiny_model(), patch=32)
    out = tmp_path / "hm"
    argv = ["heatmaps", str(table), "--patch-model", str(tmp_path / "run"), "--out", str(out), "--stride", "10",
            "--quiet", "--mode", "dense"]
    assert main(argv) == 0
    capsys.readouterr()
    assert json.loads((out / "heatmaps.json").read_text())["mode"] == "dense"
    df = exams.load_valid(out / "exams.csv")
    assert (df["heatmap_mode"] == "dense").all()
    grid_file = next((out / "maps").glob("*_cc_grid.npz"))
    assert str(np.load(grid_file)["mode"]) == "dense"
    # The same folder with the other mode is refused in one line.
    assert main(argv[:-1] + ["patches"]) == 1
    assert "mode" in capsys.readouterr().err
