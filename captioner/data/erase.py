"""Erasing parts of a photo: boxes painted over in the ImageNet mean colour before the model sees it.

A heatmap claims "this word came from here"; erasing "here" and captioning again lets anyone check the
claim. The web page, its API, ``captioner caption --erase`` and ``captioner explain`` all erase the
same way, here: boxes are ``[x, y, w, h]`` in the photo's own pixels (after EXIF rotation), clipped to
the photo, and filled with (124, 116, 104), the mean colour the encoder's normalisation subtracts, so an
erased region carries no signal rather than a black one. The same photo and boxes give the same caption
everywhere, and the same as a copy of the photo painted by hand.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw

from ..errors import ConfigError

MEAN_RGB = (124, 116, 104)  # ImageNet mean (0.485, 0.456, 0.406) in 8-bit
MAX_BOXES = 64
Box = tuple[float, float, float, float]  # x, y, w, h in pixels


def parse_box(value: Any, what: str = "an erase box") -> Box:
    """One ``[x, y, w, h]`` (a list of four numbers, or the text ``x,y,w,h``), or a one-line ConfigError."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        try:
            value = [float(p) for p in parts]
        except ValueError:
            raise ConfigError(f"{what} must be four numbers x,y,w,h, got {value[:60]!r}") from None
    if not isinstance(value, (list, tuple)) or len(value) != 4 or \
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"{what} must be four numbers [x, y, w, h], got {str(value)[:60]}")
    x, y, w, h = (float(v) for v in value)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise ConfigError(f"{what} must be finite numbers, got {str(value)[:60]}")
    if w < 0 or h < 0:
        raise ConfigError(f"{what} has a negative width or height: {str(value)[:60]}")
    return x, y, w, h


def parse_boxes(value: Any, what: str = "erase") -> list[Box]:
    """A list of boxes: a JSON text or a Python list; at most :data:`MAX_BOXES`."""
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except (ValueError, UnicodeDecodeError):
            raise ConfigError(f"{what} must be a JSON list of [x, y, w, h] boxes") from None
    if not isinstance(value, list):
        raise ConfigError(f"{what} must be a list of [x, y, w, h] boxes, got {type(value).__name__}")
    if len(value) > MAX_BOXES:
        raise ConfigError(f"{what}: at most {MAX_BOXES} boxes, got {len(value)}")
    return [parse_box(v, f"{what} box {i + 1}") for i, v in enumerate(value)]


def clip_box(box: Box, width: int, height: int) -> tuple[int, int, int, int] | None:
    """The whole pixels of ``box`` inside a ``width`` x ``height`` photo as ``(x, y, w, h)``; None if none."""
    x, y, w, h = box
    x0, y0 = max(0, math.floor(x)), max(0, math.floor(y))
    x1, y1 = min(width, math.ceil(x + w)), min(height, math.ceil(y + h))
    return (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None


def erase(image: Image.Image, boxes: Sequence[Box]) -> tuple[Image.Image, list[list[int]]]:
    """A copy of ``image`` with ``boxes`` filled with :data:`MEAN_RGB`, and the boxes applied (clipped; a box
    wholly outside the photo is left out)."""
    out = image.convert("RGB") if image.mode != "RGB" else image.copy()
    draw = ImageDraw.Draw(out)
    applied = []
    for box in boxes:
        clipped = clip_box(box, *out.size)
        if clipped is None:
            continue
        x, y, w, h = clipped
        draw.rectangle((x, y, x + w - 1, y + h - 1), fill=MEAN_RGB)
        applied.append([x, y, w, h])
    return out, applied


def cell_boxes(cells: Sequence[int], grid: int, width: int, height: int) -> list[Box]:
    """The photo region of each attention cell (row-major ids of a ``grid`` x ``grid`` grid), as boxes: the
    model squeezes the whole photo onto its grid, so cell (r, c) is the r-th row and c-th column of the
    photo cut into ``grid`` x ``grid`` equal parts."""
    boxes = []
    for cell in cells:
        r, c = divmod(int(cell), grid)
        x0, x1 = c * width / grid, (c + 1) * width / grid
        y0, y1 = r * height / grid, (r + 1) * height / grid
        boxes.append((x0, y0, x1 - x0, y1 - y0))
    return boxes
