"""Breast geometry and the lesion-free image of one view: outline, skin, fat, fibroglandular tissue, muscle.

Orientation (both views, both sides): the chest wall is column 0 (left edge), the nipple points right. Right
breasts are generated already mirrored, as the preprocessing of real data would leave them.

3-D model. A breast is a half-ellipsoid in normalised coordinates p = (x, y, z): x in [0, 1] runs along the
nipple axis from the chest wall (0) to the nipple (1); y is medial-lateral, z is cranio-caudal, both in
[-1, 1]; the breast is x >= 0, |p| <= 1.
  CC  projects along z:               col = x * depth_px,  row = row0 + y * half_px
  MLO projects along an oblique axis: col = x * depth_px,  row = row0 + (cos t * z + sin t * y) * half_px
so a point's nipple-axis coordinate x is the same in both views (col / depth_px), as the radiologist's
"posterior nipple line" rule says it should be, and any point of the half-ball lands inside both outlines.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import fft as sfft

MAX_DN = 4095  # 12-bit detector range, stored in 16-bit files
DENSITY_FRACTION = {"A": 0.12, "B": 0.3, "C": 0.55, "D": 0.8}  # share of the breast area that is glandular


@dataclass(frozen=True)
class BreastShape:
    """Per-breast shape parameters shared by both views (fractions of the image, radians)."""

    depth: float  # chest wall to nipple, as a fraction of the image width
    cc_half: float  # CC half-width (medial-lateral), as a fraction of H/2
    cc_row0: float  # CC nipple row, as a fraction of H
    mlo_half: float  # MLO half-height of the ellipse, as a fraction of H/2
    mlo_row0: float  # MLO nipple row, as a fraction of H
    theta: float  # MLO obliquity (radians): how much of y vs z the MLO row direction shows
    pec_w: float  # pectoral muscle width at the top edge, fraction of W
    pec_h: float  # pectoral muscle height along the chest wall, fraction of H
    density: str  # A..D


def sample_shape(rng: np.random.Generator, density_probs) -> BreastShape:
    return BreastShape(
        depth=rng.uniform(0.72, 0.9), cc_half=rng.uniform(0.74, 0.9), cc_row0=rng.uniform(0.47, 0.53),
        mlo_half=rng.uniform(0.7, 0.82), mlo_row0=rng.uniform(0.54, 0.6), theta=np.deg2rad(rng.uniform(40, 50)),
        pec_w=rng.uniform(0.22, 0.36), pec_h=rng.uniform(0.42, 0.62),
        density=str(rng.choice(list("ABCD"), p=np.asarray(density_probs) / np.sum(density_probs))))


@dataclass(frozen=True)
class ViewGeometry:
    """Pixel geometry of one view of one breast."""

    view: str  # "cc" or "mlo"
    height: int
    width: int
    depth_px: float  # chest wall (col 0) to nipple
    half_px: float  # ellipse semi-axis along rows
    row0: float  # nipple row
    theta: float  # MLO obliquity; unused for CC

    def project(self, p) -> tuple[float, float]:
        """(row, col) of the normalised 3-D point p = (x, y, z)."""
        x, y, z = p
        u = y if self.view == "cc" else np.cos(self.theta) * z + np.sin(self.theta) * y
        return self.row0 + u * self.half_px, x * self.depth_px

    @property
    def nipple(self) -> tuple[float, float]:
        return self.row0, self.depth_px


def view_geometry(shape: BreastShape, view: str, height: int, width: int) -> ViewGeometry:
    if view == "cc":
        return ViewGeometry("cc", height, width, shape.depth * width, shape.cc_half * height / 2,
                            shape.cc_row0 * height, 0.0)
    return ViewGeometry("mlo", height, width, shape.depth * width, shape.mlo_half * height / 2,
                        shape.mlo_row0 * height, shape.theta)


def power_noise(shape: tuple[int, int], beta: float, rng: np.random.Generator, stretch: float = 1.0) -> np.ndarray:
    """Gaussian noise with power spectrum 1/f^beta (float32, zero mean, unit std).

    Frequencies are counted in cycles per image height, so the texture looks the same at any resolution.
    ``stretch`` > 1 squeezes the column frequencies: structures elongate along the nipple axis (ducts).
    """
    h, w = shape
    amp = _amplitude(h, w, float(beta), float(stretch))
    re_im = rng.standard_normal((2,) + amp.shape, dtype=np.float32)
    spec = np.empty(amp.shape, np.complex64)
    spec.real = re_im[0] * amp
    spec.imag = re_im[1] * amp
    out = sfft.irfft2(spec, s=(h, w))
    out -= out.mean()
    out /= out.std() + 1e-12
    return out.astype(np.float32, copy=False)


@lru_cache(maxsize=16)
def _amplitude(h: int, w: int, beta: float, stretch: float) -> np.ndarray:
    """Spectral amplitude f^(-beta/2) on the rfft2 grid (cached: every breast of a cohort reuses it)."""
    fy = sfft.fftfreq(h).astype(np.float32)[:, None] * h
    fx = sfft.rfftfreq(w).astype(np.float32)[None, :] * h * stretch
    amp = (fx * fx + fy * fy + 1.0) ** (-beta / 4)  # +1: no infinite power at DC
    amp.setflags(write=False)
    return amp


def _outline_wobble(rng: np.random.Generator, xn: np.ndarray, yn: np.ndarray) -> np.ndarray:
    """Smooth relative perturbation (within +-5%) of the outline radius, harmonics 2..4 of the angle.

    Uses cos/sin of the angle from (xn, yn) and angle-addition formulas instead of arctan2 + cos: the same
    function, several times faster on full-size images.
    """
    r = np.sqrt(xn * xn + yn * yn) + 1e-6
    c1, s1 = xn / r, yn / r
    c2, s2 = c1 * c1 - s1 * s1, 2 * c1 * s1
    c3, s3 = c2 * c1 - s2 * s1, s2 * c1 + c2 * s1
    c4, s4 = c2 * c2 - s2 * s2, 2 * c2 * s2
    out = np.zeros(np.broadcast(xn, yn).shape, np.float32)
    for ck, sk in ((c2, s2), (c3, s3), (c4, s4)):
        amp, phase = rng.uniform(-0.015, 0.015), rng.uniform(0, 2 * np.pi)
        out += np.float32(amp * np.cos(phase)) * ck - np.float32(amp * np.sin(phase)) * sk
    return out


def radius_map(geo: ViewGeometry, shape: BreastShape, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Normalised radius rho (< 1 inside the breast) and pectoral-muscle indicator (float, 0..1), (H, W)."""
    h, w = geo.height, geo.width
    rows = np.arange(h, dtype=np.float32)[:, None]
    cols = np.arange(w, dtype=np.float32)[None, :]
    xn = cols / geo.depth_px
    yn = (rows - geo.row0) / geo.half_px
    if geo.view == "mlo":
        # MLO: above the nipple row the outline is a longer quarter-ellipse that leaves through the top edge
        # at about 1.3x the pectoral width (the axillary tail), giving the convex MLO teardrop.
        top_w = min(0.95, 1.3 * shape.pec_w * geo.width / geo.depth_px)  # top-edge width / depth
        a_up = geo.row0 / np.sqrt(1.0 - top_w ** 2) / geo.half_px  # upper semi-axis in units of half_px
        yn = np.where(yn < 0, yn / a_up, yn)
    # The wobble is a slow function of the angle: evaluate it on every 4th pixel and repeat (16x cheaper;
    # the outline moves by well under 0.1 px against an exact evaluation).
    s = 4
    wob = _outline_wobble(rng, xn[:, ::s], yn[::s, :])
    wob = np.repeat(np.repeat(wob, s, axis=0), s, axis=1)[:h, :w]
    rho = np.sqrt(xn * xn + yn * yn) / (1.0 + wob)
    if geo.view == "cc":
        return rho.astype(np.float32), np.zeros((h, w), np.float32)
    # Pectoral muscle: a slightly convex wedge at the top-left, soft edge of about 1 px.
    edge = shape.pec_w * w * np.clip(1.0 - rows / (shape.pec_h * h), 0, 1) ** 0.8
    pec = np.clip(edge - cols + 0.5, 0.0, 1.0)
    return rho.astype(np.float32), pec.astype(np.float32)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def render_background(geo: ViewGeometry, shape: BreastShape, rng: np.random.Generator):
    """The lesion-free view in DN (float32, background 0) plus what later stages need.

    Returns (image, mask, gland): mask is bool (H, W) (True inside the breast), gland the fibroglandular
    fraction in [0, 1] (the imitation patch classifier fires more over dense tissue).
    """
    h, w = geo.height, geo.width
    rho, pec = radius_map(geo, shape, rng)
    mask = rho < 1.0
    # Compressed breast: full thickness in the middle, thinning over the outer ~12% to the skin (darker rim).
    edge_px = (1.0 - rho) * min(geo.depth_px, geo.half_px)  # approximate distance to the skin line, px
    thick = _smoothstep((1.0 - rho) / 0.12) ** 0.6

    rows = np.arange(h, dtype=np.float32)[:, None]
    cols = np.arange(w, dtype=np.float32)[None, :]
    xn, yn = cols / geo.depth_px, (rows - geo.row0) / geo.half_px
    # Fibroglandular tissue: large 1/f^3 blobs, elongated toward the nipple, concentrated behind the nipple
    # (the envelope), spared in the subcutaneous fat near the skin; thresholded to the density's area share.
    envelope = np.exp(-((xn - 0.45) ** 2 / 0.2 + yn ** 2 / 0.45)).astype(np.float32)
    detail = power_noise((h, w), 2.0, rng, stretch=1.5)  # fine parenchymal texture (strands, lobules)
    g = 1.4 * envelope + 0.8 * power_noise((h, w), 3.0, rng, stretch=2.0) + 0.25 * detail
    inside = mask & (pec < 0.5)
    frac = DENSITY_FRACTION[shape.density]
    sample = g[::2, ::2][inside[::2, ::2]]  # every 4th pixel estimates the quantile well enough
    thr = np.quantile(sample, 1.0 - frac) if sample.size else 0.0
    # A soft ramp (about one noise std wide): dense tissue fades into fat like clouds, not islands.
    gland = _smoothstep((g - thr) / 0.9 + 0.5) * _smoothstep((1.0 - rho) / 0.1)

    fat = 950.0 + 90.0 * detail  # fat lobules and ligaments: low-contrast texture
    tissue = fat + gland * (1100.0 + 250.0 * detail)
    img = thick * tissue
    # Pectoral muscle: dense and fairly uniform, brighter towards the chest wall.
    if geo.view == "mlo":
        muscle = 2350.0 + 120.0 * detail + 250.0 * (1.0 - cols / max(shape.pec_w * w, 1.0))
        img = img * (1.0 - pec) + muscle * pec * thick
    # Skin line: a thin bright rim (about 0.4% of the height, at least 1 px).
    skin_px = max(1.0, 0.004 * h)
    img = img + 380.0 * np.exp(-0.5 * (edge_px / skin_px) ** 2)
    img *= rng.uniform(0.93, 1.07)  # exposure varies between images
    img += 12.0 * rng.standard_normal((h, w), dtype=np.float32)  # quantum noise, DN
    img = np.where(mask, img, 0.0).astype(np.float32)
    return img, mask, gland.astype(np.float32)


def finish(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Float DN image -> uint16 with the breast in [1, 4095] and the background exactly 0."""
    out = np.clip(np.rint(img), 1, MAX_DN).astype(np.uint16)
    out[~mask] = 0
    return out
