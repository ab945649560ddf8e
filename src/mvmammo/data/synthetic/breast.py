"""One breast, both views: sample it from (seed, breast index) alone, render, write its files, return its rows.

Seeding only from (seed, index) (plus the split, which the cue needs) makes every breast independent of the
worker that draws it and of the number of workers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .png16 import write_png16_fast as write_png16
from .anatomy import finish, render_background, sample_shape, view_geometry
from .heatmaps import CHANNELS, render_heatmaps, to_png16
from .lesions import draw_cue, draw_lesion, lesion_pixels, sample_lesions
from .presets import Preset

VIEWS = ("cc", "mlo")


@dataclass(frozen=True)
class BreastTask:
    """Everything a worker needs to make breast ``index`` (picklable)."""

    index: int
    patient_id: str
    exam_id: str
    side: str
    split: str
    seed: int
    preset: Preset
    size_cc: tuple[int, int]
    size_mlo: tuple[int, int]
    heatmaps: bool
    out_dir: str


def make_breast(task: BreastTask, write: bool = True):
    """Render breast ``task.index``; write its PNGs under out_dir (when ``write``).

    Returns (row, lesion_rows, arrays): the exam-table row (dict), one dict per lesion, and the rendered
    arrays {"cc": uint16 (H, W), "mlo": ..., "cc_heatmaps": float32 (2, H, W) or None, ...}.
    """
    pre = task.preset
    main_ss, *view_ss = np.random.SeedSequence([task.seed, task.index]).spawn(5)
    rng = np.random.default_rng(main_ss)
    shape = sample_shape(rng, pre.density_probs)
    malignant = bool(rng.uniform() < pre.p_malignant)
    benign = bool(rng.uniform() < pre.p_benign)
    lesions = sample_lesions(rng, pre, benign=benign, malignant=malignant)
    cue_on = {v: bool(rng.uniform() < pre.view(v).cue.prob(task.split, malignant)) for v in VIEWS}

    stem = f"{task.patient_id}_{task.side}"
    row = {"patient_id": task.patient_id, "exam_id": task.exam_id, "side": task.side,
           "cc_path": f"images/{stem}_cc.png", "mlo_path": f"images/{stem}_mlo.png",
           "benign": int(benign), "malignant": int(malignant), "split": task.split}
    if task.heatmaps:
        for v in VIEWS:
            for ch in CHANNELS:
                row[f"{v}_heatmap_{ch}"] = f"heatmaps/{stem}_{v}_{ch}.png"
    row.update({"breast_index": task.index, "density": shape.density, "n_lesions": len(lesions)})

    arrays = {}
    geos = {}
    for i, v in enumerate(VIEWS):
        knobs = pre.view(v)
        size = task.size_cc if v == "cc" else task.size_mlo
        geo = view_geometry(shape, v, int(size[0]), int(size[1]))
        geos[v] = geo
        vrng = np.random.default_rng(view_ss[i])
        img, mask, gland = render_background(geo, shape, vrng)
        for les in lesions:
            if les.visible(v):
                draw_lesion(img, les, geo, knobs)
        cue_rc = draw_cue(img, mask, geo, vrng) if cue_on[v] else (np.nan, np.nan)
        arrays[v] = finish(img, mask)
        arrays[f"{v}_heatmaps"] = (render_heatmaps(lesions, geo, knobs, mask, gland,
                                                   np.random.default_rng(view_ss[2 + i]))
                                   if task.heatmaps else None)
        # Oracle columns: what this view truly shows (any drawn lesion of the class).
        for cls in CHANNELS:
            row[f"{v}_{cls}_visible"] = int(any(les.cls == cls and les.visible(v) for les in lesions))
        row[f"{v}_cue"] = int(cue_on[v])
        row[f"{v}_cue_row"], row[f"{v}_cue_col"] = cue_rc
        row[f"{v}_nipple_row"], row[f"{v}_nipple_col"] = round(geo.row0, 3), round(geo.depth_px, 3)

    lesion_rows = []
    for j, les in enumerate(lesions):
        lr = {"breast_index": task.index, "patient_id": task.patient_id, "exam_id": task.exam_id,
              "side": task.side, "split": task.split, "lesion": j, "cls": les.cls, "kind": les.kind,
              "x": les.pos[0], "y": les.pos[1], "z": les.pos[2], "radius": les.radius, "contrast": les.contrast}
        for v in VIEWS:
            r, c, rad = lesion_pixels(les, geos[v], pre.view(v))
            lr.update({f"{v}_row": r, f"{v}_col": c, f"{v}_radius_px": rad, f"{v}_visible": int(les.visible(v)),
                       # distance from the nipple along the nipple axis, as a share of the breast depth
                       f"{v}_axis_dist": (geos[v].depth_px - c) / geos[v].depth_px})
        lesion_rows.append(lr)

    if write:
        out = Path(task.out_dir)
        for v in VIEWS:
            write_png16(out / row[f"{v}_path"], arrays[v])
            if task.heatmaps:
                for c, ch in enumerate(CHANNELS):
                    write_png16(out / row[f"{v}_heatmap_{ch}"], to_png16(arrays[f"{v}_heatmaps"][c]))
    return row, lesion_rows, arrays


def make_breast_rows(task: BreastTask):
    """Worker entry point: write the files, send back only the (small) rows."""
    row, lesion_rows, _ = make_breast(task, write=True)
    return row, lesion_rows
