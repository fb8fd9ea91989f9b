"""Pictures for the report: inline PNGs, change maps as heat overlays, and image strips."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

MAX_SIDE = 256  # images are shrunk to this for the page; the kept PNGs beside the JSON keep their size
# a black-red-yellow-white heat scale: (position, RGB)
HEAT = np.array([(0.0, 0, 0, 0), (0.35, 180, 20, 10), (0.7, 250, 170, 20), (1.0, 255, 255, 220)], dtype=np.float32)


def png_bytes(image: np.ndarray, max_side: int = MAX_SIDE) -> bytes:
    im = Image.fromarray(image)
    if max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    im.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def data_uri(image: np.ndarray) -> str:
    """A ``data:image/png;base64,...`` URI: the page carries its images and fetches nothing."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


def heat(values: np.ndarray) -> np.ndarray:
    """``values`` in [0, 1] (h, w) -> uint8 RGB (h, w, 3) on the heat scale."""
    v = np.clip(values, 0.0, 1.0)
    out = np.stack([np.interp(v, HEAT[:, 0], HEAT[:, c]) for c in (1, 2, 3)], axis=-1)
    return out.astype(np.uint8)


def scaled(m: np.ndarray) -> np.ndarray:
    """A map's positive part divided by its maximum (zeros stay zeros)."""
    pos = np.clip(m, 0.0, None)
    top = pos.max()
    return pos / top if top > 0 else pos


def overlay(image: np.ndarray, m: np.ndarray, strength: float = 0.8) -> np.ndarray:
    """The map's heat laid over a dimmed grey copy of the image, opaque where the map is strong."""
    grey = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    under = np.repeat(grey[..., None] * 0.6, 3, axis=-1)
    v = scaled(m)
    alpha = (strength * np.sqrt(v))[..., None]
    return (under * (1 - alpha) + heat(v).astype(np.float32) * alpha).clip(0, 255).astype(np.uint8)


def strip(base: np.ndarray, tuned: np.ndarray, gap: int = 2) -> np.ndarray:
    """Pairs side by side, base above personalized, on white: uint8 (2h + gap, k w + (k - 1) gap, 3)."""
    k, h, w, _ = base.shape
    out = np.full((2 * h + gap, k * w + (k - 1) * gap, 3), 255, dtype=np.uint8)
    for j in range(k):
        x = j * (w + gap)
        out[:h, x : x + w] = base[j]
        out[h + gap :, x : x + w] = tuned[j]
    return out
