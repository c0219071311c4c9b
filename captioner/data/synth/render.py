"""One synthetic image of a style: background, objects, noise and captions, from ``(seed, index)`` alone.

Why a pure function: re-runs and any number of worker processes must give byte-identical files. The
order of random draws is the textured style's original order; other styles only change the values the
draws choose from (and skip draws whose feature they do not use), so textured images never change.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from .backgrounds import BACKGROUNDS, noise, paint_background
from .captions import captions
from .shapes import Box, paint, place
from .styles import Style
from .vocab import COLOUR_TABLE, pick


def _shape(style: Style, objects: list[dict[str, Any]], rng: np.random.Generator) -> str:
    """A shape from the style, or (with chance ``style.repeat``) an earlier object's, so counts occur."""
    if style.repeat and objects and rng.random() < style.repeat:
        return str(pick(rng, [o["shape"] for o in objects]))
    return str(pick(rng, style.shapes))


def _colours(style: Style, shape: str, objects: list[dict[str, Any]], tones: np.ndarray) -> list[str]:
    """The colours the next object may take: unused with this shape if the style wants them distinct,
    and at least ``style.contrast`` away from both background colours and their mean (if any are)."""
    used = {(o["shape"], o["colour"]) for o in objects} if style.distinct else set()
    options = [c for c in style.colours if (shape, c) not in used]
    if not style.contrast:
        return options
    refs = np.vstack([tones, tones.mean(0, keepdims=True)])
    far = [c for c in options
           if np.linalg.norm(refs - np.array(COLOUR_TABLE[c], dtype=np.float32), axis=1).min() >= style.contrast]
    return far or options


def _objects(style: Style, canvas: np.ndarray, tones: np.ndarray, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Place and paint the style's objects on ``canvas``, clear of each other; their annotations."""
    size = canvas.shape[1]
    placed: list[Box] = []
    objects: list[dict[str, Any]] = []
    lo, hi = style.objects
    for _ in range(int(rng.integers(lo, hi + 1))):
        shape = _shape(style, objects, rng)
        colour = pick(rng, _colours(style, shape, objects, tones))
        size_cls = pick(rng, style.sizes)
        pts = place(rng, shape, style.extent(size_cls), size, placed)
        if pts is None and size_cls != "small":
            size_cls = "small"
            pts = place(rng, shape, style.extent(size_cls), size, placed)
        if pts is None:
            continue
        rgb = (np.array(COLOUR_TABLE[colour], dtype=np.float32)
               + rng.uniform(-style.jitter, style.jitter, 3).astype(np.float32))
        bbox, area = paint(canvas, pts, rgb, style.shading, rng)
        objects.append({
            "shape": shape, "colour": colour, "size": size_cls, "bbox": bbox, "area": area,
            "segmentation": [[round(v, 2) for v in pts.reshape(-1).tolist()]],
            "cx": bbox[0] + bbox[2] / 2, "cy": bbox[1] + bbox[3] / 2,
        })
    return objects


def render(style: Style, seed: int, index: int, size: int) -> tuple[Image.Image, list[dict[str, Any]], list[str]]:
    """Draw image ``index`` of dataset ``seed`` in ``style``: the picture, its objects and five captions."""
    rng = np.random.default_rng(style.stream(seed, index))
    bg = BACKGROUNDS[pick(rng, style.backgrounds)]
    canvas, tones = paint_background(rng, bg, size)
    objects = _objects(style, canvas, tones, rng)
    lo, hi = style.noise
    if hi > 0:
        canvas += noise(rng, size) * np.float32(rng.uniform(lo, hi))
    planes = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    img = Image.merge("RGB", [Image.fromarray(p, mode="L") for p in planes])
    return img, objects, captions(style.grammar, objects, bg.words, size, rng)
