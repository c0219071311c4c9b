"""Captions for synthetic images: five different sentences that each name every object's shape.

Why: the pointing game scores the words that name a category (and colour words against objects of
that colour), so every caption must name every object, by the category word or its plural.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backgrounds import BG_WORDS
from .vocab import NUMBERS, SIZE_WORDS, pick


def _article(phrase: str) -> str:
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def _np(o: dict[str, Any], rng: np.random.Generator, size: bool | None = None) -> str:
    """'a small red circle' / 'a red circle'; size word included at random unless ``size`` says."""
    with_size = bool(rng.integers(2)) if size is None else size
    words = ([pick(rng, SIZE_WORDS[o["size"]])] if with_size else []) + [o["colour"], o["shape"]]
    return _article(" ".join(words))


def _rel(a: dict[str, Any], b: dict[str, Any], rng: np.random.Generator) -> str:
    """Where ``a`` is relative to ``b``, along the axis on which their centres differ most."""
    dx, dy = a["cx"] - b["cx"], a["cy"] - b["cy"]
    if abs(dx) >= abs(dy):
        side = ("to the left of", "left of") if dx < 0 else ("to the right of", "right of")
        return pick(rng, side + ("next to", "beside"))
    return pick(rng, ("above", "over") if dy < 0 else ("below", "under", "beneath"))


def _where(o: dict[str, Any], size: int, rng: np.random.Generator) -> str:
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


def _listing(objs: list[dict[str, Any]], rng: np.random.Generator) -> str:
    """'two circles in red and blue and a big green star': same shapes grouped under the plural."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for o in objs:
        groups.setdefault(o["shape"], []).append(o)
    parts = []
    for shape, members in groups.items():
        if len(members) == 1:
            parts.append(_np(members[0], rng))
        else:
            parts.append(f"{NUMBERS[len(members)]} {shape}s in {' and '.join(m['colour'] for m in members)}")
    return " and ".join(parts)


def captions(objs: list[dict[str, Any]], bg_kind: str, size: int, rng: np.random.Generator) -> list[str]:
    """Five captions from five different templates; every caption names every object's shape."""
    bg = _article(f"{pick(rng, BG_WORDS[bg_kind])} background")
    o = sorted(objs, key=lambda d: (d["cx"], d["cy"]))  # left to right
    tag = [f"{d['colour']} {d['shape']}" for d in o]
    if len(o) == 1:
        a = o[0]
        caps = [
            f"{_np(a, rng, True)} on {bg}",
            f"{_np(a, rng, False)} {_where(a, size, rng)}",
            f"there is a single {pick(rng, SIZE_WORDS[a['size']])} {a['shape']} and it is {a['colour']}",
            f"the only shape in the picture is {_np(a, rng)}",
            f"{bg} with {_np(a, rng)} {_where(a, size, rng)}",
        ]
    elif len(o) == 2:
        a, b = o
        x, y = (0, 1) if rng.integers(2) else (1, 0)
        caps = [
            f"{_np(a, rng)} {_rel(a, b, rng)} {_np(b, rng)}",
            f"{_np(b, rng)} {_rel(b, a, rng)} {_np(a, rng)}",
            f"{_listing(o, rng)} on {bg}",
            f"{_np(a, rng, False)} {_where(a, size, rng)} and {_np(b, rng, False)} {_where(b, size, rng)}",
            f"the {tag[x]} is {_rel(o[x], o[y], rng)} the {tag[y]}",
        ]
    else:
        a, b, c = o
        pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
        x, y = max(pairs, key=lambda p: (abs(o[p[0]]["cy"] - o[p[1]]["cy"]), -p[0]))
        z = 3 - x - y
        near = min((x, y), key=lambda k: abs(o[k]["cx"] - o[z]["cx"]) + abs(o[k]["cy"] - o[z]["cy"]))
        caps = [
            f"{_np(a, rng)} {_rel(a, b, rng)} {_np(b, rng)} and {_np(c, rng)} {_rel(c, b, rng)} the {b['colour']} one",
            f"{_np(c, rng)} {_rel(c, b, rng)} {_np(b, rng)} which is {_rel(b, a, rng)} {_np(a, rng)}",
            f"{_listing(o, rng)} on {bg}",
            f"{_np(a, rng, False)} {_where(a, size, rng)} with {_np(b, rng, False)} {_where(b, size, rng)}"
            f" and {_np(c, rng, False)} {_where(c, size, rng)}",
            f"the {tag[x]} is {_rel(o[x], o[y], rng)} the {tag[y]} and the {tag[z]} is"
            f" {_rel(o[z], o[near], rng)} the {tag[near]}",
        ]
    assert len(set(caps)) == len(caps), caps  # the templates differ in structure, so this cannot fire
    return caps
