"""Backgrounds and pixel noise for synthetic images.

Why separate: the background decides how hard it is to find an object, so each kind is a small piece of
data (a pattern mixing two colours of given tones, and the words captions use for it) drawn from the
image's random stream before any object. The textured style's three kinds draw exactly as they always did.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Background:
    """One kind of background: how its two colours mix, their tones, and its caption adjectives."""

    pattern: str  # a key of _PATTERNS: flat, gradient, stripes, blotches, checker, speckle
    tones: tuple[str, str]  # keys of _TONES, one per colour (a flat pattern shows only the first)
    words: tuple[str, ...]  # "a <word> background"; never a colour word, so it cannot be scored as one
    period: tuple[float, float] = (6.0, 32.0)  # px, the range of stripe periods and checker cells


BACKGROUNDS: Mapping[str, Background] = MappingProxyType({
    # the textured style's kinds; their draws must never change (shipped models were trained on them)
    "gradient": Background("gradient", ("muted", "muted"), ("shaded", "gradient")),
    "stripes": Background("stripes", ("muted", "muted"), ("striped",)),
    "blotches": Background("blotches", ("muted", "muted"), ("mottled", "textured")),
    "plain": Background("flat", ("pale", "pale"), ("plain", "blank", "light")),
    "light-gradient": Background("gradient", ("light", "light"), ("light gradient", "pale shaded")),
    "dark-gradient": Background("gradient", ("dark", "dark"), ("dark gradient", "dark shaded")),
    "dark-plain": Background("flat", ("dark", "dark"), ("dark", "plain dark")),
    "dark-blotches": Background("blotches", ("dark", "dark"), ("dark mottled", "dark cloudy")),
    "checker": Background("checker", ("low", "high"), ("checkered", "chequered"), period=(4.0, 10.0)),
    "fine-stripes": Background("stripes", ("low", "high"), ("finely striped", "pinstriped"), period=(3.0, 6.0)),
    "speckle": Background("speckle", ("low", "high"), ("speckled", "grainy")),
})

#: tone -> (largest saturation, lowest and highest HSV value); "muted" keeps saturated objects visible
_TONES: dict[str, tuple[float, float, float]] = {
    "muted": (0.35, 0.2, 0.75), "pale": (0.15, 0.88, 0.98), "light": (0.3, 0.78, 0.97), "dark": (0.5, 0.04, 0.3),
    "low": (0.35, 0.12, 0.38), "high": (0.35, 0.55, 0.85),
}


def _tone(rng: np.random.Generator, tone: str) -> np.ndarray:
    """A random colour of ``tone`` as float RGB 0-255."""
    s_max, v_lo, v_hi = _TONES[tone]
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, s_max), rng.uniform(v_lo, v_hi))
    return np.array([r, g, b], dtype=np.float32) * 255.0


# A pattern maps (rng, background, size, x row, y column, angle) to the mix t in [0, 1] of the two colours.
Pattern = Callable[[np.random.Generator, Background, int, np.ndarray, np.ndarray, float], np.ndarray]


def _flat(rng: np.random.Generator, bg: Background, size: int, xx: np.ndarray, yy: np.ndarray,
          theta: float) -> np.ndarray:
    return np.zeros((size, size), dtype=np.float32)


def _gradient(rng: np.random.Generator, bg: Background, size: int, xx: np.ndarray, yy: np.ndarray,
              theta: float) -> np.ndarray:
    proj = xx * math.cos(theta) + yy * math.sin(theta)
    return (proj - proj.min()) / max(float(proj.max() - proj.min()), 1e-6)


def _stripes(rng: np.random.Generator, bg: Background, size: int, xx: np.ndarray, yy: np.ndarray,
             theta: float) -> np.ndarray:
    proj = xx * math.cos(theta) + yy * math.sin(theta)
    period = rng.uniform(*bg.period) / size
    wave = np.sin(2 * math.pi * proj / period + rng.uniform(0, 2 * math.pi))
    return np.clip(0.5 + 0.5 * wave * rng.uniform(1.0, 4.0), 0.0, 1.0)


def _blotches(rng: np.random.Generator, bg: Background, size: int, xx: np.ndarray, yy: np.ndarray,
              theta: float) -> np.ndarray:
    k = int(rng.integers(3, 9))
    grid = Image.fromarray(rng.random((k, k), dtype=np.float32), mode="F")
    return np.clip(np.asarray(grid.resize((size, size), Image.BICUBIC)), 0.0, 1.0)


def _checker(rng: np.random.Generator, bg: Background, size: int, xx: np.ndarray, yy: np.ndarray,
             theta: float) -> np.ndarray:
    """A checkerboard turned by ``theta``: hard edges at a few pixels' pitch."""
    cell = rng.uniform(*bg.period) / size
    u = (xx * math.cos(theta) + yy * math.sin(theta)) / cell
    v = (yy * math.cos(theta) - xx * math.sin(theta)) / cell
    return ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)


def _speckle(rng: np.random.Generator, bg: Background, size: int, xx: np.ndarray, yy: np.ndarray,
             theta: float) -> np.ndarray:
    """Salt-and-pepper grains of 1-2 px: each grain is the light colour with a random density."""
    grain = int(rng.integers(1, 3))
    density = rng.uniform(0.2, 0.5)
    cells = -(-size // grain)
    dots = rng.random((cells, cells), dtype=np.float32) < density
    return np.repeat(np.repeat(dots, grain, 0), grain, 1)[:size, :size].astype(np.float32)


_PATTERNS: dict[str, Pattern] = {"flat": _flat, "gradient": _gradient, "stripes": _stripes,
                                 "blotches": _blotches, "checker": _checker, "speckle": _speckle}


def paint_background(rng: np.random.Generator, bg: Background, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The (3, size, size) float canvas of ``bg`` and its two colours (2 x 3), for contrast checks."""
    c0, c1 = _tone(rng, bg.tones[0]), _tone(rng, bg.tones[1])
    coords = np.arange(size, dtype=np.float32) / size
    xx, yy = coords[None, :], coords[:, None]
    theta = rng.uniform(0.0, 2 * math.pi)
    t = _PATTERNS[bg.pattern](rng, bg, size, xx, yy, theta)
    # channel-first (3, H, W): numpy broadcasts over a trailing axis of 3 several times slower
    return c0[:, None, None] + (c1 - c0)[:, None, None] * t[None], np.stack([c0, c1])


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
