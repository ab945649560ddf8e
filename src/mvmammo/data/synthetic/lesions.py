"""Lesions: placed once in 3-D, projected into each view, drawn (or obscured) per view; and the cue marker.

Sizes are fractions of the view's image height (then times the view's ``size`` knob), contrasts are DN
(then times the view's ``contrast`` knob), so the cohort is equally learnable at 64 px and at full size.
Morphology follows the BI-RADS lexicon loosely:
  benign:    mass = round/oval, circumscribed (sharp smooth margin); calc = a few coarse "popcorn" specks
  malignant: mass = irregular with spiculations (radiating lines); calc = a cluster of many fine specks
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anatomy import ViewGeometry
from .presets import Preset, ViewKnobs

MIN_SIGMA_PX = 0.55  # a speck is never drawn finer than this, so it survives at 64 px


@dataclass(frozen=True)
class Lesion:
    cls: str  # "benign" | "malignant"
    kind: str  # "mass" | "calc"
    pos: tuple[float, float, float]  # normalised 3-D position (x: chest wall 0 -> nipple 1, y, z)
    radius: float  # mass radius or calcification cluster radius, fraction of image height
    contrast: float  # DN before the view's contrast knob
    shape_seed: int  # seeds the outline harmonics / speck layout, so both views draw "the same" lesion
    visible_cc: bool
    visible_mlo: bool

    def visible(self, view: str) -> bool:
        return self.visible_cc if view == "cc" else self.visible_mlo


def _sample_position(rng: np.random.Generator) -> tuple[float, float, float]:
    """Uniform in the part of the half-ball (radius 0.8) at least 0.12 from the chest wall."""
    while True:
        p = rng.uniform(-0.8, 0.8, size=3)
        p[0] = abs(p[0])
        if p[0] >= 0.12 and np.linalg.norm(p) <= 0.8:
            return float(p[0]), float(p[1]), float(p[2])


def _visibility(rng: np.random.Generator, preset: Preset) -> tuple[bool, bool]:
    u = rng.uniform()
    vis_cc = u < 1.0 - preset.cc.obscure
    if preset.coupling == "exclusive":
        vis_mlo = u >= preset.mlo.obscure  # antithetic: the same u, counted from the other end
    elif preset.coupling == "independent":
        vis_mlo = rng.uniform() < 1.0 - preset.mlo.obscure
    else:
        raise ValueError(f"unknown coupling {preset.coupling!r}; use independent or exclusive")
    return bool(vis_cc), bool(vis_mlo)


def sample_lesions(rng: np.random.Generator, preset: Preset, benign: bool, malignant: bool) -> list[Lesion]:
    out = []
    for cls, present, p_mass in (("malignant", malignant, preset.p_mass_malignant),
                                 ("benign", benign, preset.p_mass_benign)):
        if not present:
            continue
        n = 2 if rng.uniform() < preset.p_second_lesion else 1
        for _ in range(n):
            kind = "mass" if rng.uniform() < p_mass else "calc"
            if kind == "mass":
                radius = rng.uniform(0.035, 0.06) if cls == "benign" else rng.uniform(0.035, 0.065)
                contrast = rng.uniform(700, 1000)
            else:
                radius = rng.uniform(0.015, 0.03) if cls == "benign" else rng.uniform(0.02, 0.035)
                contrast = rng.uniform(1200, 1600)
            vis_cc, vis_mlo = _visibility(rng, preset)
            out.append(Lesion(cls, kind, _sample_position(rng), float(radius), float(contrast),
                              int(rng.integers(2**31)), vis_cc, vis_mlo))
    return out


def _patch(img_shape, row, col, extent):
    """Slices and local coordinate grids (dy, dx relative to the centre) of a window around (row, col)."""
    h, w = img_shape
    r0, r1 = max(int(row - extent), 0), min(int(row + extent) + 2, h)
    c0, c1 = max(int(col - extent), 0), min(int(col + extent) + 2, w)
    dy = np.arange(r0, r1, dtype=np.float32)[:, None] - np.float32(row)
    dx = np.arange(c0, c1, dtype=np.float32)[None, :] - np.float32(col)
    return (slice(r0, r1), slice(c0, c1)), dy, dx


def _draw_mass(img, row, col, r_px, contrast, malignant, rng):
    extent = r_px * (2.8 if malignant else 1.3) + 3
    sl, dy, dx = _patch(img.shape, row, col, extent)
    if dy.size == 0 or dx.size == 0:
        return
    ang = rng.uniform(0, np.pi)
    # Rotate into the lesion frame; oval masses have a short axis (aspect 0.6..1).
    u = dx * np.cos(ang) + dy * np.sin(ang)
    v = -dx * np.sin(ang) + dy * np.cos(ang)
    aspect = 1.0 if malignant else rng.uniform(0.6, 1.0)
    phi = np.arctan2(v, u)
    r_phi = np.full_like(phi, r_px)
    if malignant:  # irregular margin: a few random harmonics of the radius
        for k in range(3, 8):
            r_phi = r_phi * (1 + rng.uniform(0.04, 0.12) * np.cos(k * phi + rng.uniform(0, 2 * np.pi)))
    d = np.sqrt(u * u + (v / aspect) ** 2) / r_phi
    softness = 0.14 if malignant else 0.05  # ill-defined vs circumscribed margin
    body = (0.55 + 0.45 * np.sqrt(np.clip(1 - d * d, 0, 1))) / (1 + np.exp((d - 1) / softness))
    img[sl] += contrast * body
    if malignant:  # spiculations: thin lines radiating out to 1.6-2.6 radii, fading outwards
        width = max(MIN_SIGMA_PX, 0.07 * r_px)
        for a in rng.uniform(0, 2 * np.pi, size=rng.integers(7, 14)):
            length = r_px * rng.uniform(1.6, 2.6)
            ca, sa = np.cos(a), np.sin(a)
            along = dx * ca + dy * sa
            perp = -dx * sa + dy * ca
            t = along / length
            line = np.exp(-0.5 * (perp / width) ** 2) * np.clip(1 - t, 0, 1) * (t > 0.3)
            img[sl] += 0.55 * contrast * line


def _draw_calcs(img, row, col, r_px, contrast, malignant, rng, height):
    """Benign: 1-4 coarse specks (about 2 mm); malignant: 8-20 fine specks (under 1 mm) within r_px.

    Specks are sharp-edged disks (calcium is much denser than tissue), never smaller than ~1 px across.
    """
    if malignant:
        n, rs = int(rng.integers(8, 21)), max(MIN_SIGMA_PX, 0.0025 * height)
    else:
        n, rs = int(rng.integers(1, 5)), max(1.0, 0.008 * height)
    extent = r_px + 2 * rs + 2
    sl, dy, dx = _patch(img.shape, row, col, extent)
    if dy.size == 0 or dx.size == 0:
        return
    rad = r_px * np.sqrt(rng.uniform(0, 1, n))
    ang = rng.uniform(0, 2 * np.pi, n)
    for rr, aa in zip(rad, ang):
        s = rs * rng.uniform(0.7, 1.3)
        d = np.sqrt((dy - rr * np.sin(aa)) ** 2 + (dx - rr * np.cos(aa)) ** 2)
        edge = max(0.35, 0.15 * s)
        img[sl] += contrast * rng.uniform(0.6, 1.0) / (1 + np.exp(np.clip((d - s) / edge, -30, 30)))


def lesion_pixels(lesion: Lesion, geo: ViewGeometry, knobs: ViewKnobs) -> tuple[float, float, float]:
    """(row, col, radius_px) of the lesion in this view, the radius including the view's size knob."""
    row, col = geo.project(lesion.pos)
    return row, col, lesion.radius * geo.height * knobs.size


def draw_lesion(img: np.ndarray, lesion: Lesion, geo: ViewGeometry, knobs: ViewKnobs) -> None:
    """Add the lesion to the float DN image in place (the caller checks visibility)."""
    row, col, r_px = lesion_pixels(lesion, geo, knobs)
    # The same shape seed in both views, mixed with the view so the projected outline differs a little.
    rng = np.random.default_rng([lesion.shape_seed, 0 if geo.view == "cc" else 1])
    contrast = lesion.contrast * knobs.contrast
    if lesion.kind == "mass":
        _draw_mass(img, row, col, r_px, contrast, lesion.cls == "malignant", rng)
    else:
        _draw_calcs(img, row, col, r_px, contrast, lesion.cls == "malignant", rng, geo.height)


def draw_cue(img: np.ndarray, mask: np.ndarray, geo: ViewGeometry, rng: np.random.Generator) -> tuple[float, float]:
    """A bright ring (a skin-marker-like artefact) just inside the skin line; returns its (row, col).

    It sits inside the breast, so the background stays exactly 0 and background cropping keeps it.
    """
    r_px = max(1.6, 0.02 * geo.height)
    for _ in range(50):
        a = rng.uniform(-1.1, 1.1)  # angle from the nipple axis, radians
        rr = rng.uniform(0.82, 0.88)
        row = geo.row0 + rr * geo.half_px * np.sin(a)
        col = rr * geo.depth_px * np.cos(a)
        if 0 <= int(row) < geo.height and 0 <= int(col) < geo.width and mask[int(row), int(col)]:
            break
    sl, dy, dx = _patch(img.shape, row, col, r_px * 1.6 + 2)
    d = np.sqrt(dy * dy + dx * dx)
    width = max(0.6, 0.3 * r_px)
    img[sl] += 1500.0 * np.exp(-0.5 * ((d - r_px) / width) ** 2)
    return float(row), float(col)
