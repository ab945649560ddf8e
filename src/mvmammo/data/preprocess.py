"""The reference preprocessing: flip, crop the background, best centre, fixed-size windows.

Per image (uint16 (H, W)):
1. crop: mask = pixels > 0 on a copy subsampled to <= 1024 px a side (speed: a 4700 x 2900 film is 13 Mpx),
   eroded, largest connected component, dilated; its bounding box (in source pixels) plus ``crop_margin``.
2. flip: the chest wall is the side where the breast is widest, i.e. the half of the box holding more of
   the component; the crop is mirrored when that is the right half, so every breast has its chest wall
   on the LEFT and extends to the right (the synthetic cohort's orientation).
3. best centre (our orientation): horizontally, a breast narrower than the window keeps its chest wall
   at the window's left edge; a wider one has the window pinned to the nipple-side (right) edge.
   Vertically, CC windows sit where they hold the most breast tissue (max sliding sum of tissue per
   row). MLO windows are anchored at the bottom of the breast (window bottom = crop bottom); an MLO
   breast wider than the window gets the horizontal position holding the most tissue in those rows
   (pinning it to the nipple side would often leave the empty lower-right corner).
4. window: (H + 2 m, W + 2 m) pixels around that centre, m = the augmentation margin; pixels outside the
   crop are zero (padding, also when the image is smaller than the window).
Heatmaps follow the image's geometry exactly (resized to the image first if their shape differs).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

WINDOW_CC = (2677, 1942)   # (H, W) px, SPEC section 2
WINDOW_MLO = (2974, 1748)
WORK_SIDE = 1024           # longest side of the copy the mask is computed on, px


class PreprocessError(ValueError):
    """The image cannot be preprocessed (e.g. no pixel above the background)."""


@dataclass(frozen=True)
class Geometry:
    """Where a window comes from. Boxes / centres in source-image pixels, (y, x)."""
    crop_box: tuple      # y0, x0, y1, x1 (end exclusive) in the source image
    flipped: bool        # the crop is mirrored left-right before the window is cut
    top_left: tuple      # (y, x) of the window (without margin) in the cropped, flipped frame
    window: tuple        # (H, W) without margin
    margin: int          # px added on every side

    @property
    def center(self) -> tuple:
        """Window centre (y, x) in source-image pixels."""
        y0, x0, y1, x1 = self.crop_box
        cy = y0 + self.top_left[0] + self.window[0] / 2
        cxc = self.top_left[1] + self.window[1] / 2
        cx = x1 - cxc if self.flipped else x0 + cxc
        return int(round(cy)), int(round(cx))


def breast_mask(img: np.ndarray, erode: int = 2, dilate: int = 2, background: int = 0) -> tuple[np.ndarray, int]:
    """(mask of the largest connected component at working resolution, subsampling step in px).

    ``background``: pixels <= it are background (0 = the reference rule; scanned film needs more).
    """
    step = max(1, int(np.ceil(max(img.shape) / WORK_SIDE)))
    small = img[::step, ::step] > background
    if not small.any():
        raise PreprocessError(f"no breast found: no pixel above {background} (blank image?)")
    m = ndimage.binary_erosion(small, iterations=erode) if erode else small
    if not m.any():  # a very thin object: erosion removed everything, use the raw mask
        m = small
    lab, n = ndimage.label(m)
    sizes = ndimage.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1))
    m = lab == (int(np.argmax(sizes)) + 1)
    if dilate:
        m = ndimage.binary_dilation(m, iterations=dilate) & small
    return m, step


def crop_and_flip(img: np.ndarray, crop_margin: int = 20, background: int = 0) -> tuple[tuple, bool]:
    """(crop box y0 x0 y1 x1 in source px, whether to flip) from the breast mask."""
    m, step = breast_mask(img, background=background)
    ys, xs = np.nonzero(m)
    h, w = img.shape
    y0, y1 = max(0, ys.min() * step - crop_margin), min(h, (ys.max() + 1) * step + crop_margin)
    x0, x1 = max(0, xs.min() * step - crop_margin), min(w, (xs.max() + 1) * step + crop_margin)
    mid = (xs.min() + xs.max() + 1) / 2
    flipped = bool((xs >= mid).sum() > (xs < mid).sum())  # more tissue on the right: chest wall is right
    return (int(y0), int(x0), int(y1), int(x1)), flipped


def oriented_crop(arr: np.ndarray, box: tuple, flipped: bool) -> np.ndarray:
    y0, x0, y1, x1 = box
    out = arr[y0:y1, x0:x1]
    return out[:, ::-1] if flipped else out


def _best_start(counts: np.ndarray, size: int) -> int:
    """Start of the length-``size`` run of ``counts`` with the largest sum (first one on ties)."""
    sums = np.convolve(counts.astype(np.int64), np.ones(size, dtype=np.int64), mode="valid")
    return int(np.argmax(sums))


def best_top_left(crop: np.ndarray, view: str, window: tuple) -> tuple[int, int]:
    """(y, x) of the window's top-left corner in the oriented crop; see the module doc (step 3).

    Negative values mean the window starts before the crop (that side is zero-padded).
    """
    h, w = crop.shape
    wh, ww = window
    tissue = crop > 0
    if view == "mlo":
        top = h - wh  # bottom-anchored: the window's last row is the breast's last row
        if w <= ww:
            return top, 0
        rows = tissue[max(0, top):]  # choose x on the rows the window covers
        return top, _best_start(rows.sum(axis=0), ww)
    left = 0 if w <= ww else w - ww  # chest wall at the left edge, or pinned to the nipple side
    if h <= wh:
        return (h - wh) // 2, left
    return _best_start(tissue[:, max(0, left):].sum(axis=1), wh), left


def cut_window(arr: np.ndarray, top_left: tuple, window: tuple, margin: int) -> np.ndarray:
    """arr[y - m : y + H + m, x - m : x + W + m], zero outside arr; shape (H + 2m, W + 2m)."""
    H, W = window[0] + 2 * margin, window[1] + 2 * margin
    y, x = top_left[0] - margin, top_left[1] - margin
    out = np.zeros((H, W), dtype=arr.dtype)
    sy0, sx0 = max(0, y), max(0, x)
    sy1, sx1 = min(arr.shape[0], y + H), min(arr.shape[1], x + W)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y:sy1 - y, sx0 - x:sx1 - x] = arr[sy0:sy1, sx0:sx1]
    return out


def plan(img: np.ndarray, view: str, window: tuple, margin: int, crop_margin: int = 20,
         background: int = 0) -> Geometry:
    box, flipped = crop_and_flip(img, crop_margin, background)
    crop = oriented_crop(img, box, flipped)
    return Geometry(box, flipped, best_top_left(crop, view, window), tuple(window), int(margin))


def apply(arr: np.ndarray, geo: Geometry) -> np.ndarray:
    """Cut the window of ``geo`` out of an image or a same-shaped heatmap."""
    return cut_window(oriented_crop(arr, geo.crop_box, geo.flipped), geo.top_left, geo.window, geo.margin)


def match_shape(heatmap: np.ndarray, shape: tuple) -> np.ndarray:
    """A heatmap resized (bilinear) to the image's shape when it differs."""
    if heatmap.shape == tuple(shape):
        return heatmap
    zoom = (shape[0] / heatmap.shape[0], shape[1] / heatmap.shape[1])
    out = ndimage.zoom(heatmap, zoom, order=1)
    fixed = np.zeros(shape, dtype=heatmap.dtype)  # zoom can be off by a pixel from rounding
    fixed[:min(shape[0], out.shape[0]), :min(shape[1], out.shape[1])] = out[:shape[0], :shape[1]]
    return fixed


# ---- the whole table -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Settings:
    window_cc: tuple = WINDOW_CC
    window_mlo: tuple = WINDOW_MLO
    margin: int = 100          # augmentation margin on every side, px
    crop_margin: int = 20      # added around the breast's bounding box, px
    voi_lut: bool = False      # apply a DICOM's VOI LUT / window when reading
    background: int = 0        # pixels <= this are background for the crop mask (0 = reference rule)


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in str(text))


def process_breast(task: dict) -> dict:
    """One breast: both views (+ heatmaps) -> window PNGs. Never raises: a failure names file and reason."""
    from pathlib import Path

    from mvmammo.data.images import read_heatmap, read_image, write_heatmap_png, write_png16

    s: Settings = task["settings"]
    out_dir, stem, values = Path(task["out_dir"]), task["stem"], {}
    current = None
    try:
        for view, window in (("cc", s.window_cc), ("mlo", s.window_mlo)):
            current = task["paths"][f"{view}_path"]
            img = read_image(current, voi_lut=s.voi_lut)
            geo = plan(img, view, window, s.margin, s.crop_margin, s.background)
            rel = f"images/{stem}_{view}.png"
            write_png16(out_dir / rel, apply(img, geo))
            values.update({f"{view}_path": rel, f"{view}_window_margin": s.margin,
                           f"{view}_crop_box": " ".join(map(str, geo.crop_box)),
                           f"{view}_center": " ".join(map(str, geo.center)), f"{view}_flipped": int(geo.flipped)})
            for kind in ("benign", "malignant"):
                col = f"{view}_heatmap_{kind}"
                if task["paths"].get(col):
                    current = task["paths"][col]
                    hm = match_shape(read_heatmap(current), img.shape)
                    hrel = f"heatmaps/{stem}_{view}_{kind}.png"
                    write_heatmap_png(out_dir / hrel, apply(hm, geo))
                    values[col] = hrel
    except Exception as exc:  # any failure drops this breast, reported; the others go on
        msg = str(exc) if str(current) in str(exc) else f"{current}: {exc}"
        return {"index": task["index"], "ok": False, "file": str(current), "reason": f"{type(exc).__name__}: {msg}"}
    return {"index": task["index"], "ok": True, "values": values}


def preprocess_table(table, out_dir, settings: Settings = Settings(), workers: int = 1, progress: bool = True):
    """Window every breast of an exam table into ``out_dir``; returns (table of kept breasts, report frame).

    Writes out_dir/images/*.png, out_dir/heatmaps/*.png, out_dir/exams.csv, out_dir/preprocess_report.csv.
    """
    import sys
    from multiprocessing import get_context
    from pathlib import Path

    import pandas as pd
    from tqdm import tqdm

    from mvmammo.data import exams

    df = exams.load_valid(table, check_files=False)
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "heatmaps").mkdir(parents=True, exist_ok=True)
    tasks = []
    for i, row in df.iterrows():
        paths = {c: str(exams.resolve_path(df, row[c])) for c in exams.PATH_COLUMNS
                 if c in df.columns and pd.notna(row[c]) and str(row[c]).strip()}
        tasks.append({"index": i, "paths": paths, "out_dir": str(out_dir), "settings": settings,
                      "stem": f"{i:06d}_{_safe_name(row['breast_id'])}"})
    results = []
    bar = tqdm(total=len(tasks), desc="preprocess", unit="breast", disable=not progress, file=sys.stderr)
    if workers > 1 and len(tasks) > 1:
        with get_context().Pool(min(workers, len(tasks))) as pool:
            for r in pool.imap_unordered(process_breast, tasks):
                results.append(r)
                bar.update(1)
    else:
        for t in tasks:
            results.append(process_breast(t))
            bar.update(1)
    bar.close()
    results.sort(key=lambda r: r["index"])
    report = pd.DataFrame([{"breast_id": df.loc[r["index"], "breast_id"], "status": "kept" if r["ok"] else "dropped",
                            "file": r.get("file", ""), "reason": r.get("reason", "")} for r in results])
    report.to_csv(out_dir / "preprocess_report.csv", index=False)
    kept = [r for r in results if r["ok"]]
    out = df.loc[[r["index"] for r in kept]].copy()
    for r in kept:
        for k, v in r["values"].items():
            if k not in out.columns:
                out[k] = None
            out.at[r["index"], k] = v
    if len(out):
        out.attrs["root"] = str(out_dir.resolve())
        problems = exams.validate(out, check_files=True)
        if problems:
            raise PreprocessError("preprocessed table is not valid:\n" + "\n".join(problems[:20]))
        exams.write_table(out.reset_index(drop=True), out_dir / "exams.csv")
    return out.reset_index(drop=True), report
