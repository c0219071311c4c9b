"""Phrases that captions are built from: noun phrases, relations, locations and listings.

Why separate: the textured style's grammar and the template grammars of the other styles describe
objects the same way, so a colour or size word always means the same object property.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .vocab import NUMBERS, SIZE_WORDS, pick

Obj = dict[str, Any]  # one drawn object: shape, colour, size, bbox, cx, cy, ...


def article(phrase: str) -> str:
    """'a red circle' / 'an orange star'."""
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def noun_phrase(o: Obj, rng: np.random.Generator, size: bool | None = None) -> str:
    """'a small red circle' / 'a red circle'; size word included at random unless ``size`` says."""
    with_size = bool(rng.integers(2)) if size is None else size
    words = ([pick(rng, SIZE_WORDS[o["size"]])] if with_size else []) + [o["colour"], o["shape"]]
    return article(" ".join(words))


def relation(a: Obj, b: Obj, rng: np.random.Generator) -> str:
    """Where ``a`` is relative to ``b``, along the axis on which their centres differ most."""
    dx, dy = a["cx"] - b["cx"], a["cy"] - b["cy"]
    if abs(dx) >= abs(dy):
        side = ("to the left of", "left of") if dx < 0 else ("to the right of", "right of")
        return pick(rng, side + ("next to", "beside"))
    return pick(rng, ("above", "over") if dy < 0 else ("below", "under", "beneath"))


def where(o: Obj, size: int, rng: np.random.Generator) -> str:
    """Which ninth of the image the object's centre is in: 'in the top left corner', 'at the bottom'."""
    col = 0 if o["cx"] < size / 3 else 2 if o["cx"] > 2 * size / 3 else 1
    row = 0 if o["cy"] < size / 3 else 2 if o["cy"] > 2 * size / 3 else 1
    vert, horiz = ("top", "", "bottom")[row], ("left", "", "right")[col]
    if vert and horiz:
        return f"in the {vert} {horiz} corner"
    if vert:
        return f"at the {vert}"
    if horiz:
        return f"on the {horiz}"
    return pick(rng, ("in the middle", "in the centre"))


def _in_colours(shape: str, members: list[Obj], rng: np.random.Generator) -> str:
    """The textured style's group: 'two circles in red and blue' (no random draw)."""
    return f"{NUMBERS[len(members)]} {shape}s in {' and '.join(m['colour'] for m in members)}"


def counted(shape: str, members: list[Obj], rng: np.random.Generator) -> str:
    """A group in one of three forms: 'two blue stars', 'two stars', 'three circles in red and blue'."""
    number = NUMBERS[len(members)]
    colours = list(dict.fromkeys(m["colour"] for m in members))
    if len(colours) == 1 and rng.integers(3):
        return f"{number} {colours[0]} {shape}s"
    if rng.integers(2):
        return f"{number} {shape}s"
    return f"{number} {shape}s in {' and '.join(colours)}"


def listing(objs: list[Obj], rng: np.random.Generator,
            group: Callable[[str, list[Obj], np.random.Generator], str] = _in_colours) -> str:
    """'two circles in red and blue and a big green star': same shapes grouped under the plural."""
    groups: dict[str, list[Obj]] = {}
    for o in objs:
        groups.setdefault(o["shape"], []).append(o)
    parts = []
    for shape, members in groups.items():
        if len(members) == 1:
            parts.append(noun_phrase(members[0], rng))
        else:
            parts.append(group(shape, members, rng))
    return " and ".join(parts)
