"""Caption grammars: five different sentences per image, each naming every object's shape.

Why: the pointing game scores the words that name a category (and colour words against objects of
that colour), so every caption must name every object, by the category word or its plural ("two
circles"). A style's grammar is a tuple of template names from TEMPLATES, taking turns; ("classic",)
is the textured style's fixed set of five, kept draw for draw as it always was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .phrases import Obj, counted
from .phrases import article as _article
from .phrases import listing as _listing
from .phrases import noun_phrase as _np
from .phrases import relation as _rel
from .phrases import where as _where
from .vocab import NUMBERS, SIZE_WORDS, pick

CLASSIC = ("classic",)
_TURNS = 30  # template turns before the fallback sentences fill up the five


def _classic(objs: list[Obj], bg_words: tuple[str, ...], size: int, rng: np.random.Generator) -> list[str]:
    """The textured style's five captions, one per fixed template; its draws must never change."""
    bg = _article(f"{pick(rng, bg_words)} background")
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


@dataclass(frozen=True)
class _Scene:
    objs: list[Obj]  # left to right
    bg_words: tuple[str, ...]
    size: int


def _short(s: _Scene, rng: np.random.Generator) -> str:
    """'a red circle', 'three circles and a red square'."""
    return _listing(s.objs, rng, counted)


def _there_is(s: _Scene, rng: np.random.Generator) -> str:
    """'there is a blue circle in the picture', 'there are two stars and a square in the image'."""
    phrase = _listing(s.objs, rng, counted)
    verb = "is" if phrase.startswith(("a ", "an ")) else "are"
    return f"there {verb} {phrase} in the {pick(rng, ('picture', 'image'))}"


def _picture_of(s: _Scene, rng: np.random.Generator) -> str:
    """'a picture of a pink star'."""
    return f"{pick(rng, ('a picture', 'an image', 'a drawing'))} of {_listing(s.objs, rng, counted)}"


def _on_background(s: _Scene, rng: np.random.Generator) -> str:
    """'a red circle on a checkered background'."""
    return f"{_listing(s.objs, rng, counted)} on {_article(pick(rng, s.bg_words) + ' background')}"


def _located(s: _Scene, rng: np.random.Generator) -> str:
    """'a red circle in the top left corner and a blue star at the bottom'."""
    return " and ".join(f"{_np(o, rng, False)} {_where(o, s.size, rng)}" for o in s.objs)


def _related(s: _Scene, rng: np.random.Generator) -> str | None:
    """'a green square above a blue triangle', then any other objects; needs two objects."""
    pairs = [(a, b) for a in s.objs for b in s.objs if a is not b]
    if not pairs:
        return None
    a, b = pick(rng, [p for p in pairs if p[0]["shape"] != p[1]["shape"]] or pairs)
    rest = [o for o in s.objs if o is not a and o is not b]
    text = f"{_np(a, rng)} {_rel(a, b, rng)} {_np(b, rng)}"
    if not rest:
        return text
    if {o["shape"] for o in rest} & {a["shape"], b["shape"]}:  # "... a red star and two stars" miscounts
        return " and ".join([text] + [_np(o, rng) for o in rest])
    return f"{text} and {_listing(rest, rng, counted)}"


def _total(s: _Scene, rng: np.random.Generator) -> str | None:
    """'three circles and a red square make four shapes in all'; needs two kinds of shape."""
    if len({o["shape"] for o in s.objs}) < 2:
        return None
    return f"{_listing(s.objs, rng, counted)} make {NUMBERS[len(s.objs)]} shapes in all"


#: template name -> sentence of a scene (None: the template does not fit, e.g. a relation of one object)
TEMPLATES: dict[str, Callable[[_Scene, np.random.Generator], str | None]] = {
    "short": _short, "there_is": _there_is, "picture_of": _picture_of, "on_background": _on_background,
    "where": _located, "relation": _related, "count": _total,
}


def _templated(grammar: tuple[str, ...], s: _Scene, rng: np.random.Generator) -> list[str]:
    """Five different sentences, the grammar's templates taking turns; fixed fallbacks if they repeat."""
    caps: list[str] = []
    for turn in range(_TURNS):
        text = TEMPLATES[grammar[turn % len(grammar)]](s, rng)
        if text is not None and text not in caps:
            caps.append(text)
            if len(caps) == 5:
                return caps
    phrase = _listing(s.objs, rng, counted)
    for text in (f"the picture shows {phrase}", f"an image of {phrase}", f"{phrase} in the image",
                 f"a drawing of {phrase}", f"a picture with {phrase}"):  # five distinct, so five in all
        if len(caps) < 5 and text not in caps:
            caps.append(text)
    return caps


def captions(grammar: tuple[str, ...], objs: list[Obj], bg_words: tuple[str, ...], size: int,
             rng: np.random.Generator) -> list[str]:
    """The five captions of an image in ``grammar``; ``bg_words`` are its background's adjectives."""
    if grammar == CLASSIC:
        return _classic(objs, bg_words, size, rng)
    return _templated(grammar, _Scene(sorted(objs, key=lambda d: (d["cx"], d["cy"])), bg_words, size), rng)
