"""Patches from annotated images, and the class rules of NYU's patch model.

Per image (one view of one breast of the exam table), with its lesion masks (:mod:`.annotations`) and its
tissue mask (the breast mask, else pixels above the image minimum):
  - positives: ``per_lesion`` patches per annotated lesion, centred on the lesion's centre (mask centroid)
    shifted by a uniform jitter of up to ``jitter`` x patch px on each axis. Class: **malignant** when the
    patch overlaps any malignant lesion, else **benign** (it overlaps the benign lesion it was centred on);
  - **outside**: in an image of a biopsied breast (benign or malignant label 1), ``per_image`` patches at
    random tissue positions that overlap no annotated lesion;
  - **negative**: in an image of a breast without biopsy (both labels 0), ``per_image`` random tissue patches;
  - background: a patch whose tissue share is under ``min_tissue`` is skipped (never a class).
Patches are cut from the standardised crop of :func:`mvmammo.patches.image.prepare` (the same transform the
heatmap inference uses), positions clipped so a patch lies inside the crop.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mvmammo.patches.image import Prepared, prepare
from mvmammo.patches.runs import CLASSES

MALIGNANT, BENIGN, OUTSIDE, NEGATIVE = range(4)


@dataclass(frozen=True)
class PatchConfig:
    patch: int = 256
    per_lesion: int = 4           # positive patches per annotated lesion
    jitter: float = 0.25          # max shift of a positive's centre, as a share of the patch side
    per_image: int = 4            # outside / negative patches per image
    min_tissue: float = 0.5       # share of a patch inside the breast below which it is background
    tries: int = 50               # random draws per wanted outside / negative patch before giving up
    crop_margin: int = 20


def tissue_mask(img: np.ndarray) -> np.ndarray:
    from mvmammo.data.breast_mask import PreprocessError, breast_mask

    try:
        return breast_mask(img).full(img)
    except PreprocessError:
        return img > img.min()


def _integral(mask: np.ndarray) -> np.ndarray:
    s = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    s[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    return s


def _box_sum(ii: np.ndarray, y: int, x: int, p: int) -> int:
    return int(ii[y + p, x + p] - ii[y, x + p] - ii[y + p, x] + ii[y, x])


def _to_crop(mask: np.ndarray, prep: Prepared) -> np.ndarray:
    """A source-size mask in the prepared crop's frame (padded with False)."""
    y0, x0, y1, x1 = prep.box
    out = np.zeros(prep.image.shape, bool)
    out[:y1 - y0, :x1 - x0] = mask[y0:y1, x0:x1]
    return out


def image_patches(img: np.ndarray, lesions: list[tuple[str, np.ndarray]], biopsied: bool, cfg: PatchConfig,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(patches float16 (N, P, P), labels int64 (N,), top-left (N, 2) in source px) of one image."""
    p = cfg.patch
    prep = prepare(img, p, cfg.crop_margin)
    h, w = prep.image.shape
    tissue = _integral(_to_crop(tissue_mask(img), prep))
    mal = _integral(_to_crop(np.any([m for c, m in lesions if c == "malignant"] or [np.zeros(img.shape, bool)],
                                    axis=0), prep))
    any_lesion = _integral(_to_crop(np.any([m for _, m in lesions] or [np.zeros(img.shape, bool)], axis=0), prep))
    need = cfg.min_tissue * p * p
    out, labels, where = [], [], []

    def take(y: int, x: int, label: int) -> None:
        out.append(prep.image[y:y + p, x:x + p].astype(np.float16))
        labels.append(label)
        where.append((y + prep.box[0], x + prep.box[1]))

    for cls, m in lesions:
        ys, xs = np.nonzero(_to_crop(m, prep))
        if ys.size == 0:
            continue   # the lesion lies outside the breast's crop box
        cy, cx = ys.mean(), xs.mean()
        for _ in range(cfg.per_lesion):
            dy, dx = rng.uniform(-cfg.jitter, cfg.jitter, 2) * p
            y = int(np.clip(round(cy + dy - p / 2), 0, h - p))
            x = int(np.clip(round(cx + dx - p / 2), 0, w - p))
            if _box_sum(tissue, y, x, p) < need:
                continue
            take(y, x, MALIGNANT if _box_sum(mal, y, x, p) > 0 else BENIGN)
    label = OUTSIDE if biopsied else NEGATIVE
    got = 0
    for _ in range(cfg.per_image * cfg.tries):
        if got == cfg.per_image:
            break
        y, x = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
        if _box_sum(tissue, y, x, p) < need or _box_sum(any_lesion, y, x, p) > 0:
            continue
        take(y, x, label)
        got += 1
    if not out:
        return np.zeros((0, p, p), np.float16), np.zeros(0, np.int64), np.zeros((0, 2), np.int64)
    return np.stack(out), np.asarray(labels, np.int64), np.asarray(where, np.int64)


def class_counts(labels: np.ndarray) -> dict:
    return {c: int((labels == k).sum()) for k, c in enumerate(CLASSES)}
