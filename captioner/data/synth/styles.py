"""The registry of synthetic image styles: each one a small declarative spec, all in one place.

Why: a grounding result measured on one kind of image does not carry over to another, so the generator
makes several kinds. Adding a style is adding one ``Style(...)`` to ``_REGISTRY``; the renderer and the
caption grammars only read its fields. ``textured`` is the original generator and must stay byte-identical.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from ...errors import ConfigError
from .backgrounds import BACKGROUNDS
from .captions import CLASSIC, TEMPLATES
from .vocab import COLOUR_TABLE, COLOURS, NUMBERS, SHAPES, SIZES, pick

DEFAULT_STYLE = "textured"
_MIX_SALT = zlib.crc32(b"captioner synth style mix")  # the stream that picks each image's style in a mix


@dataclass(frozen=True)
class Style:
    """How one kind of synthetic image looks and is described. Every field is data."""

    name: str
    description: str  # one line, for ``captioner synth --list-styles``
    backgrounds: tuple[str, ...]  # keys of BACKGROUNDS; one is drawn per image
    colours: tuple[str, ...]  # colour words (keys of COLOUR_TABLE) objects are drawn in
    grammar: tuple[str, ...]  # caption templates (keys of TEMPLATES) taking turns; CLASSIC = textured's
    shapes: tuple[str, ...] = SHAPES
    objects: tuple[int, int] = (1, 3)  # fewest and most objects per image (fewer if one finds no room)
    sizes: tuple[str, ...] = SIZES  # each object's size class is drawn from this; repeat one to favour it
    small: tuple[float, float] = (0.14, 0.21)  # extent range of a small object, as a fraction of the side
    large: tuple[float, float] = (0.28, 0.36)
    shading: float = 0.1  # brightness falls by up to this fraction across a shape; 0 = flat
    jitter: float = 10.0  # +- RGB levels around the colour's nominal value
    noise: tuple[float, float] = (2.0, 12.0)  # range of the Gaussian pixel noise's sigma, in levels
    distinct: bool = True  # no two objects share shape and colour, so "the red circle" is one object
    repeat: float = 0.0  # chance that an object takes an earlier object's shape (for count captions)
    contrast: float = 0.0  # RGB distance an object's colour keeps from the background's colours
    salted: bool = True  # random stream keyed by the style's name too; False: by (seed, index) alone

    def extent(self, size_cls: str) -> tuple[float, float]:
        """The extent range of ``size_cls`` ("small" or "large")."""
        return self.small if size_cls == "small" else self.large

    def stream(self, seed: int, index: int) -> list[int]:
        """The seed sequence of image ``index``: different styles draw different images."""
        return [seed, index, zlib.crc32(self.name.encode())] if self.salted else [seed, index]


_NO_WHITE = ("red", "green", "blue", "yellow", "purple", "orange")
_REGISTRY = (
    Style("textured", "the original: shaded shapes on muted gradients, stripes or blotches with pixel noise, "
          "1-3 objects, five varied sentences", backgrounds=("gradient", "stripes", "blotches"),
          colours=COLOURS, grammar=CLASSIC, salted=False),  # today's (seed, index) stream and draws
    Style("plain", "flat unshaded shapes on a plain light background, no noise, 1-2 objects; "
          "'there is a blue circle in the picture', 'a green square above a blue triangle'",
          backgrounds=("plain",), colours=_NO_WHITE + ("black",),
          grammar=("there_is", "relation", "short", "there_is", "relation"), objects=(1, 2),
          small=(0.10, 0.18), large=(0.28, 0.36), shading=0.0, jitter=4.0, noise=(0.0, 0.0), contrast=90.0),
    Style("gradient", "shaded shapes on smooth light or dark two-colour gradients, mild noise, 1-3 objects",
          backgrounds=("light-gradient", "dark-gradient"), colours=_NO_WHITE,
          grammar=("short", "on_background", "relation", "where", "there_is"),
          small=(0.10, 0.20), large=(0.26, 0.34), noise=(1.0, 5.0), contrast=90.0),
    Style("noisy", "shapes on checkerboards, fine stripes or salt-and-pepper speckle under strong pixel noise, "
          "1-3 objects", backgrounds=("checker", "fine-stripes", "speckle"), colours=COLOURS,
          grammar=("on_background", "there_is", "relation", "short", "where"),
          small=(0.12, 0.20), large=(0.26, 0.34), noise=(14.0, 26.0), contrast=90.0),
    Style("crowded", "3-4 mostly small shapes, often the same shape twice; count captions "
          "('two blue stars and a green triangle')", backgrounds=("plain", "light-gradient", "blotches"),
          colours=("red", "green", "blue", "yellow"), grammar=("short", "there_is", "count", "on_background",
                                                                "relation"),
          objects=(3, 4), sizes=("small", "small", "small", "large"), small=(0.09, 0.15), large=(0.20, 0.27),
          noise=(1.0, 6.0), distinct=False, repeat=0.3, contrast=90.0),
    Style("dark", "neon shapes (pink, cyan, lime, gold, violet, coral, white) on dark plain, gradient or "
          "mottled backgrounds, 1-3 objects", backgrounds=("dark-plain", "dark-gradient", "dark-blotches"),
          colours=("pink", "cyan", "lime", "gold", "violet", "coral", "white"),
          grammar=("short", "there_is", "relation", "on_background", "picture_of"),
          small=(0.10, 0.20), large=(0.26, 0.34), noise=(1.0, 6.0), contrast=90.0),
)


def check_style(style: Style) -> None:
    """Raise ValueError if ``style`` names something that does not exist or cannot be drawn."""
    unknown = ([b for b in style.backgrounds if b not in BACKGROUNDS]
               + [c for c in style.colours if c not in COLOUR_TABLE]
               + [t for t in style.grammar if t not in TEMPLATES and style.grammar != CLASSIC]
               + [s for s in style.shapes if s not in SHAPES] + [s for s in style.sizes if s not in SIZES])
    lo, hi = style.objects
    if unknown or not style.backgrounds or not style.grammar or not 1 <= lo <= hi <= max(NUMBERS):
        raise ValueError(f"style {style.name!r}: unknown {unknown} or bad object range {style.objects}")
    if style.distinct and len(style.shapes) * len(style.colours) < hi:
        raise ValueError(f"style {style.name!r}: too few shape/colour pairs for {hi} distinct objects")
    if not all(0 < a <= b < 0.5 for a, b in (style.small, style.large)):
        raise ValueError(f"style {style.name!r}: extents must be fractions in (0, 0.5)")


for _style in _REGISTRY:
    check_style(_style)

#: Every style by name, in the order ``--list-styles`` shows them.
STYLES: Mapping[str, Style] = MappingProxyType({s.name: s for s in _REGISTRY})


def resolve_styles(style: str | Sequence[str]) -> tuple[str, ...]:
    """The style names that ``style`` stands for: a name, a comma-separated mix, a list, or "all".

    A name given twice counts twice in the mix. An unknown name is a one-line ConfigError listing the styles.
    """
    parts = style.split(",") if isinstance(style, str) else list(style)
    names: list[str] = []
    for part in parts:
        name = part.strip() if isinstance(part, str) else part
        if name == "all":
            names.extend(STYLES)
        elif isinstance(name, str) and name in STYLES:
            names.append(name)
        else:
            raise ConfigError(f"synth: unknown style {name!r}; available styles: {', '.join(STYLES)} "
                              f"(or 'all', or a comma-separated mix such as plain,dark)")
    if not names:
        raise ConfigError(f"synth: no style given; available styles: {', '.join(STYLES)}")
    return tuple(names)


def style_of_image(styles: Sequence[str], seed: int, index: int) -> str:
    """The style of image ``index``: the only one, or a draw from the mix keyed by (seed, index)."""
    if len(set(styles)) == 1:
        return styles[0]
    return str(pick(np.random.default_rng([seed, index, _MIX_SALT]), styles))
