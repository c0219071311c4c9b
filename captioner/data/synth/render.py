"""One synthetic image: background, objects, noise and captions, from ``(seed, index)`` alone.

Why a pure function: re-runs and any number of worker processes must give byte-identical files.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from .backgrounds import background, noise
from .captions import captions
from .shapes import Box, paint, place
from .vocab import COLOUR_RGB, COLOURS, SHAPES, SIZES, pick


def render(seed: int, index: int, size: int) -> tuple[Image.Image, list[dict[str, Any]], list[str]]:
    """Draw image ``index`` of dataset ``seed``: the picture, its objects and five captions."""
    rng = np.random.default_rng([seed, index])
    canvas, bg_kind = background(rng, size)
    placed: list[Box] = []
    objects: list[dict[str, Any]] = []
    for _ in range(int(rng.integers(1, 4))):
        used = {(o["shape"], o["colour"]) for o in objects}
        shape = pick(rng, SHAPES)
        colour = pick(rng, [c for c in COLOURS if (shape, c) not in used])
        size_cls = pick(rng, SIZES)
        pts = place(rng, shape, size_cls, size, placed)
        if pts is None and size_cls != "small":
            size_cls = "small"
            pts = place(rng, shape, size_cls, size, placed)
        if pts is None:
            continue
        rgb = np.array(COLOUR_RGB[colour], dtype=np.float32) + rng.uniform(-10, 10, 3).astype(np.float32)
        bbox, area = paint(canvas, pts, rgb, rng)
        objects.append({
            "shape": shape, "colour": colour, "size": size_cls, "bbox": bbox, "area": area,
            "segmentation": [[round(v, 2) for v in pts.reshape(-1).tolist()]],
            "cx": bbox[0] + bbox[2] / 2, "cy": bbox[1] + bbox[3] / 2,
        })
    canvas += noise(rng, size) * np.float32(rng.uniform(2.0, 12.0))
    planes = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    img = Image.merge("RGB", [Image.fromarray(p, mode="L") for p in planes])
    return img, objects, captions(objects, bg_kind, size, rng)
