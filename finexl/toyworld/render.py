"""Procedural renderer of the toy world: one object on a background, drawn from explicit aspect values.

Rendering is deterministic for ``(aspects, seed)``: the seed only moves nuisance factors (a jitter of a pixel in
position and a few degrees in rotation, the phase of the background pattern, the grain noise). Shapes are drawn at
``SUPERSAMPLE`` times the output size and box-downsampled, so edges are anti-aliased at every size.

Stages (``render``):
    1. background colour and pattern
    2. object mask (shape, pose, size, position), filled or outlined, composited in the object colour
    3. style on the whole image: saturation, brightness, blur, grain
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from finexl.errors import ConfigError
from finexl.toyworld.aspects import Aspects

SUPERSAMPLE = 4
MIN_SIZE, MAX_SIZE = 32, 64

OBJECT_RGB = {
    "red": (0.86, 0.10, 0.10),
    "orange": (0.96, 0.52, 0.05),
    "yellow": (0.95, 0.85, 0.10),
    "green": (0.10, 0.62, 0.20),
    "blue": (0.10, 0.30, 0.90),
    "purple": (0.55, 0.15, 0.75),
}
BACKGROUND_RGB = {
    "white": (0.96, 0.96, 0.96),
    "grey": (0.60, 0.60, 0.60),
    "beige": (0.87, 0.80, 0.64),
    "sky": (0.68, 0.82, 0.95),
    "mint": (0.70, 0.90, 0.76),
    "black": (0.10, 0.10, 0.12),
}
POSE_DEGREES = {"upright": 0.0, "left": 90.0, "upside-down": 180.0, "right": 270.0}  # counter-clockwise
POSITION_OFFSET = {
    "centre": (0.0, 0.0),
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "top": (0.0, -1.0),
    "bottom": (0.0, 1.0),
}

# Geometry, as fractions of the image width.
POSITION_SHIFT = 0.20  # distance of an off-centre object from the centre
RADIUS_MIN, RADIUS_RANGE = 0.19, 0.13  # object radius = RADIUS_MIN + RADIUS_RANGE * size
OUTLINE_WIDTH = 0.06
JITTER_SHIFT, JITTER_DEGREES = 0.03, 8.0
BLUR_MAX_SIGMA = 1.2 / 32  # Gaussian sigma at blur=1
GRAIN_MAX_STD = 0.08  # grain noise std (in [0, 1] intensity) at grain=1


def _unit_polygon(shape: str) -> np.ndarray:
    """Outline points of an upright shape in unit coordinates, y pointing down. Shape (n_points, 2)."""
    if shape == "triangle":
        return np.array([(0.0, -1.0), (0.9, 0.62), (-0.9, 0.62)])
    if shape == "arrow":
        return np.array(
            [(0.0, -1.0), (0.75, -0.15), (0.3, -0.15), (0.3, 1.0), (-0.3, 1.0), (-0.3, -0.15), (-0.75, -0.15)]
        )
    if shape == "house":
        return np.array(
            [(0.0, -1.0), (0.85, -0.2), (0.62, -0.2), (0.62, 0.85), (-0.62, 0.85), (-0.62, -0.2), (-0.85, -0.2)]
        )
    if shape == "heart":
        t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
        return np.stack([x / 16.5, -(y + 2.5) / 15.0], axis=1)
    if shape == "moon":
        # A crescent opening upwards: the outer disc minus a disc shifted up, traced as one polygon.
        t = np.linspace(0, np.pi, 48)
        outer = np.stack([np.cos(t), 0.05 + 0.9 * np.sin(t)], axis=1)  # lower half of the outer circle, right to left
        inner_t = np.linspace(np.pi, 0, 48)
        inner = np.stack([0.98 * np.cos(inner_t), -0.55 + 0.9 * np.sin(inner_t)], axis=1)
        return np.concatenate([outer, inner], axis=0) + np.array([0.0, -0.2])
    raise ValueError(f"no geometry for shape {shape!r}")


def _object_mask(aspects: Aspects, hi: int, rng: np.random.Generator) -> np.ndarray:
    """Coverage of the object at supersampled resolution, float in {0, 1}. Shape (hi, hi)."""
    radius = (RADIUS_MIN + RADIUS_RANGE * aspects.size) * hi
    dx, dy = POSITION_OFFSET[aspects.position]
    jx, jy = rng.uniform(-JITTER_SHIFT, JITTER_SHIFT, size=2)
    cx = hi / 2 + (dx * POSITION_SHIFT + jx) * hi
    cy = hi / 2 + (dy * POSITION_SHIFT + jy) * hi
    angle = np.deg2rad(POSE_DEGREES[aspects.pose] + rng.uniform(-JITTER_DEGREES, JITTER_DEGREES))
    # Counter-clockwise on screen with y pointing down: (x, y) -> (x cos + y sin, -x sin + y cos).
    rot = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    points = _unit_polygon(aspects.shape) @ rot.T * radius + np.array([cx, cy])
    canvas = Image.new("L", (hi, hi), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in points], fill=255)
    mask = np.asarray(canvas, dtype=np.float32) / 255.0
    if aspects.fill == "outline":
        solid = mask > 0.5
        # A thin shape (a small crescent) keeps an open interior: the outline is at most half its half-thickness,
        # so that outlined and filled never cover the same pixels.
        half_thickness = float(ndimage.distance_transform_edt(solid).max())
        width = max(1, min(int(round(OUTLINE_WIDTH * hi)), int(half_thickness // 2)))
        inner = ndimage.binary_erosion(solid, iterations=width)
        mask = mask * (1.0 - inner)
    return mask


def _background(aspects: Aspects, hi: int, rng: np.random.Generator) -> np.ndarray:
    """Background at supersampled resolution, float RGB. Shape (hi, hi, 3)."""
    base = np.array(BACKGROUND_RGB[aspects.background], dtype=np.float32)
    # The pattern colour contrasts with the background: darker on light backgrounds, lighter on dark ones.
    ink = base * 0.8 if base.mean() > 0.4 else base + 0.16
    yy, xx = np.mgrid[0:hi, 0:hi].astype(np.float32) / hi  # in [0, 1)
    phase_x, phase_y = rng.random(2)
    if aspects.pattern == "plain":
        weight = np.zeros((hi, hi), np.float32)
    elif aspects.pattern == "stripes":
        period = 0.25
        weight = (((xx + yy) / period + phase_x) % 1.0 < 0.5).astype(np.float32)
    elif aspects.pattern == "dots":
        period = 0.25
        fx = ((xx / period + phase_x) % 1.0) - 0.5
        fy = ((yy / period + phase_y) % 1.0) - 0.5
        weight = (fx**2 + fy**2 < 0.28**2).astype(np.float32)
    elif aspects.pattern == "checks":
        period = 0.25
        weight = ((np.floor(xx / period + phase_x) + np.floor(yy / period + phase_y)) % 2).astype(np.float32)
    elif aspects.pattern == "gradient":
        weight = np.clip(yy * 1.3 - 0.15, 0.0, 1.0) * 1.4
        ink = base * 0.55 if base.mean() > 0.4 else base + 0.35
    else:  # pragma: no cover - Aspects validates the value
        raise ValueError(aspects.pattern)
    weight = np.clip(weight, 0.0, 1.0)[..., None]
    return base * (1 - weight) + ink * weight


def _style(image: np.ndarray, aspects: Aspects, size: int, rng: np.random.Generator) -> np.ndarray:
    """Apply saturation, brightness, blur and grain to a float RGB image of shape (size, size, 3)."""
    gray = image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    saturation = 0.4 + 0.8 * aspects.saturation
    image = gray[..., None] + saturation * (image - gray[..., None])
    image = np.clip(image, 0.0, 1.0)
    if aspects.brightness < 0.5:
        image = image * (0.6 + 0.8 * aspects.brightness)
    else:  # brightening mixes towards white, which also washes colours out
        image = image + (1.0 - image) * 0.7 * (aspects.brightness - 0.5)
    sigma = BLUR_MAX_SIGMA * size * aspects.blur
    if sigma > 0.05:
        image = ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0), mode="nearest")
    grain = rng.standard_normal((size, size, 1)).astype(np.float32) * (GRAIN_MAX_STD * aspects.grain)
    return np.clip(image + grain, 0.0, 1.0)


def render(aspects: Aspects, seed: int = 0, size: int = 32) -> np.ndarray:
    """Render one image.

    Args:
        aspects: the exact aspect values.
        seed: moves only the nuisance factors (small jitter, pattern phase, grain noise).
        size: output width and height in pixels, in ``[32, 64]``.

    Returns:
        ``uint8`` array of shape ``(size, size, 3)``.
    """
    return render_with_mask(aspects, seed, size)[0]


def render_with_mask(aspects: Aspects, seed: int = 0, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """:func:`render`, and the object's coverage of each output pixel (float32 ``(size, size)`` in ``[0, 1]``, before
    the style stage blurs it): the ground truth where the object is, which scores the change maps."""
    if not isinstance(size, int) or not (MIN_SIZE <= size <= MAX_SIZE):
        raise ConfigError(f"image size must be an integer in [{MIN_SIZE}, {MAX_SIZE}], got {size!r}")
    rng = np.random.default_rng(seed)
    hi = size * SUPERSAMPLE
    # 1. background colour and pattern
    image = _background(aspects, hi, rng)
    # 2. the object
    mask = _object_mask(aspects, hi, rng)[..., None]
    colour = np.array(OBJECT_RGB[aspects.colour], dtype=np.float32)
    image = image * (1 - mask) + colour * mask
    image = image.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean(axis=(1, 3))  # box downsample
    coverage = mask[..., 0].reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))
    # 3. style
    image = _style(image.astype(np.float32), aspects, size, rng)
    return (image * 255.0 + 0.5).astype(np.uint8), coverage.astype(np.float32)
