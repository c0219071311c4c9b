"""The words of the synthetic captions and the colours they name.

Why one module: a caption word and the pixels it describes must come from one table, so the pointing
game can trust that "red" in a caption is the ``colour`` attribute of a red-drawn object.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Category names; each caption that mentions an object uses one of these verbatim (plural: add "s").
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "white")
SIZES: tuple[str, ...] = ("small", "large")
#: Nominal RGB of each colour; objects are drawn within a few levels of it (jitter + shading + noise).
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 215, 40),
    "purple": (140, 60, 190), "orange": (245, 140, 30), "white": (245, 245, 245),
}
#: Every colour word any style can draw, with its nominal RGB. A word means one colour in every style,
#: so a mixed dataset's ``colour`` attributes stay comparable; COLOUR_RGB is the textured style's subset.
COLOUR_TABLE: dict[str, tuple[int, int, int]] = {
    **COLOUR_RGB, "black": (30, 30, 35),
    "pink": (255, 90, 200), "cyan": (40, 225, 235), "lime": (170, 250, 50), "gold": (255, 195, 40),
    "violet": (170, 120, 255), "coral": (255, 125, 90),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little"), "large": ("large", "big")}
NUMBERS: dict[int, str] = {2: "two", 3: "three", 4: "four"}


def pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    """One of ``options``, uniformly; the one way every module draws a word or a kind."""
    return options[int(rng.integers(len(options)))]
