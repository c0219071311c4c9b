"""Synthetic COCO-style captioning data: coloured shapes on backgrounds of several styles.

Why: tests, CI and the attention pointing game need a dataset whose objects have known, tight boxes and
whose captions name those objects by their category word, stored in real COCO format so the loaders used
for COCO are the ones exercised here. A grounding result on one kind of image does not carry over to
another, so there are several styles (STYLES); the default, ``textured``, is the original generator.
Every image is a pure function of ``(seed, index)`` and its style, so re-runs and any number of worker
processes give byte-identical files.

Modules: ``styles`` (the registry of style specs), ``vocab`` (words and colours), ``backgrounds``,
``shapes`` (outlines, placement, painting), ``render`` (one image), ``phrases`` and ``captions`` (the
sentences), ``dataset`` (splits, workers, COCO files, atomic output).
"""

from __future__ import annotations

from .backgrounds import BACKGROUNDS, Background
from .dataset import FORMAT_VERSION, SPLITS, generate
from .render import render
from .styles import DEFAULT_STYLE, STYLES, Style, check_style, resolve_styles, style_of_image
from .vocab import COLOUR_RGB, COLOUR_TABLE, COLOURS, SHAPES, SIZES

__all__ = ["BACKGROUNDS", "COLOURS", "COLOUR_RGB", "COLOUR_TABLE", "DEFAULT_STYLE", "FORMAT_VERSION", "SHAPES",
           "SIZES", "SPLITS", "STYLES", "Background", "Style", "check_style", "generate", "render",
           "resolve_styles", "style_of_image"]
