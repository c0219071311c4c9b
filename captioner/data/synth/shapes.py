"""Shape outlines, placement without overlap, and antialiased painting with a tight box.

Why separate: the pointing game is only as good as the boxes, and the boxes come from here: every box
is measured on the mask actually drawn, and boxes keep a gap so none contains another object's pixels.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

_SUPERSAMPLE = 2  # antialiased edges for the price of a 2x mask over each object's box only
_GAP = 4  # px of background kept between object boxes, so one box never contains another object's pixels
_MARGIN = 2  # px kept clear of the image border

Box = tuple[float, float, float, float]


def outline(shape: str, extent: float, rng: np.random.Generator) -> np.ndarray:
    """Polygon vertices (K x 2, centred on 0) of ``shape`` about ``extent`` px across."""
    r = extent / 2
    if shape == "circle":
        a = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        return np.stack([r * np.cos(a), r * np.sin(a)], 1)
    if shape == "square":
        pts, tilt = np.array([[-r, -r], [r, -r], [r, r], [-r, r]]), 15
    elif shape == "triangle":
        h = r * 0.87
        pts, tilt = np.array([[0, -h], [r, h], [-r, h]]), 15
    elif shape == "star":
        a = np.arange(10) * math.pi / 5 - math.pi / 2
        rad = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        pts, tilt = np.stack([rad * np.cos(a), rad * np.sin(a)], 1), 36
    elif shape == "diamond":
        pts, tilt = np.array([[0, -r], [0.6 * r, 0], [0, r], [-0.6 * r, 0]]), 10
    else:  # pragma: no cover - SHAPES and this function change together
        raise ValueError(shape)
    ang = math.radians(rng.uniform(-tilt, tilt))
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    return pts @ rot.T


def _overlaps(box: Box, placed: list[Box]) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < b[2] + _GAP and b[0] < x1 + _GAP and y0 < b[3] + _GAP and b[1] < y1 + _GAP for b in placed)


def place(rng: np.random.Generator, shape: str, extent: tuple[float, float], size: int,
          placed: list[Box]) -> np.ndarray | None:
    """Vertices of the shape, ``extent`` (a range, as a fraction of the image side) across, at a random
    spot clear of ``placed``; None after enough failed tries."""
    lo, hi = extent
    pts = outline(shape, rng.uniform(lo, hi) * size, rng)
    mn, mx = pts.min(0), pts.max(0)
    for _ in range(60):
        centre = rng.uniform(_MARGIN - mn, size - _MARGIN - mx)
        box = (*(centre + mn), *(centre + mx))
        if not _overlaps(box, placed):
            placed.append(box)
            return pts + centre
    return None


def paint(canvas: np.ndarray, pts: np.ndarray, rgb: np.ndarray, shading: float,
          rng: np.random.Generator) -> tuple[list[int], float]:
    """Composite an antialiased polygon into ``canvas``; return its tight COCO bbox and pixel area.

    Its brightness falls linearly by up to ``shading`` (0.1 = 10%) in a random direction; 0 is flat.

    The box comes from the mask actually drawn (every pixel with any coverage), not from the vertices,
    so it bounds exactly the pixels that show the shape.
    """
    size = canvas.shape[1]
    x0, y0 = (int(max(math.floor(v) - 1, 0)) for v in pts.min(0))
    x1, y1 = (int(min(math.ceil(v) + 1, size)) for v in pts.max(0))
    ss = _SUPERSAMPLE
    mask = Image.new("L", ((x1 - x0) * ss, (y1 - y0) * ss), 0)
    local = (pts - [x0, y0]) * ss - 0.5  # PIL fills a sub-pixel when its centre is inside the polygon
    ImageDraw.Draw(mask).polygon([tuple(p) for p in local.tolist()], fill=255)
    alpha = np.asarray(mask.reduce(ss), dtype=np.float32) / 255.0
    h, w = alpha.shape
    direction = rng.uniform(-1, 1, 2)
    shade = 1.0 - shading * ((np.arange(w, dtype=np.float32)[None, :] * direction[0]
                          + np.arange(h, dtype=np.float32)[:, None] * direction[1])
                         / max(w, h) * 0.5 + 0.5)
    colour = rgb[:, None, None] * shade[None]
    region = canvas[:, y0:y1, x0:x1]
    region += (colour - region) * alpha[None]
    ys, xs = np.nonzero(alpha)
    bbox = [x0 + int(xs.min()), y0 + int(ys.min()), int(xs.max() - xs.min()) + 1, int(ys.max() - ys.min()) + 1]
    return bbox, round(float(alpha.sum()), 2)
