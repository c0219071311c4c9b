"""Backgrounds and pixel noise for synthetic images.

Why separate: the background decides how hard it is to find an object, so each kind is a small
function of the image's random stream, drawn before any object.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image

from .vocab import pick

BACKGROUNDS: tuple[str, ...] = ("gradient", "stripes", "blotches")
BG_WORDS: dict[str, tuple[str, ...]] = {"gradient": ("shaded", "gradient"), "stripes": ("striped",),
                                        "blotches": ("mottled", "textured")}


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation, mid-brightness colour, so saturated objects stay visible on it."""
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.2, 0.75))
    return np.array([r, g, b], dtype=np.float32) * 255.0


def background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    """A gradient, stripes or low-frequency blotches between two muted colours, plus pixel noise."""
    kind = pick(rng, BACKGROUNDS)
    c0, c1 = _muted(rng), _muted(rng)
    coords = np.arange(size, dtype=np.float32) / size
    xx, yy = coords[None, :], coords[:, None]
    theta = rng.uniform(0.0, 2 * math.pi)
    proj = xx * math.cos(theta) + yy * math.sin(theta)
    if kind == "gradient":
        t = (proj - proj.min()) / max(float(proj.max() - proj.min()), 1e-6)
    elif kind == "stripes":
        period = rng.uniform(6.0, 32.0) / size
        wave = np.sin(2 * math.pi * proj / period + rng.uniform(0, 2 * math.pi))
        t = np.clip(0.5 + 0.5 * wave * rng.uniform(1.0, 4.0), 0.0, 1.0)
    else:
        k = int(rng.integers(3, 9))
        grid = Image.fromarray(rng.random((k, k), dtype=np.float32), mode="F")
        t = np.clip(np.asarray(grid.resize((size, size), Image.BICUBIC)), 0.0, 1.0)
    # channel-first (3, H, W): numpy broadcasts over a trailing axis of 3 several times slower
    return c0[:, None, None] + (c1 - c0)[:, None, None] * t[None], kind


_NOISE: dict[int, np.ndarray] = {}


def noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """A (3, size, size) window of unit Gaussian noise at a random offset in a fixed table.

    Drawing 150k fresh normals per image cost as much as the rest of the picture; a table built from a
    constant seed keeps the output a pure function of (seed, index) in every process.
    """
    if size not in _NOISE:
        _NOISE[size] = np.random.default_rng(12345).standard_normal((3, 2 * size, 2 * size), dtype=np.float32)
    oy, ox = rng.integers(0, size, 2)
    return _NOISE[size][:, oy:oy + size, ox:ox + size]
