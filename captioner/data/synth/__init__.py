"""Synthetic COCO-style captioning data: coloured shapes on textured backgrounds.

Why: tests, CI and the attention pointing game need a dataset whose objects have known, tight boxes and
whose captions name those objects by their category word, stored in real COCO format so the loaders used
for COCO are the ones exercised here. Every image is a pure function of ``(seed, index)``, so re-runs and
any number of worker processes give byte-identical files.

Modules: ``vocab`` (words and colours), ``backgrounds``, ``shapes`` (outlines, placement, painting),
``render`` (one image), ``captions`` (the sentences), ``dataset`` (splits, workers, COCO files).
"""

from __future__ import annotations

from .dataset import FORMAT_VERSION, SPLITS, generate
from .vocab import COLOUR_RGB, COLOURS, SHAPES, SIZES

__all__ = ["COLOUR_RGB", "COLOURS", "FORMAT_VERSION", "SHAPES", "SIZES", "SPLITS", "generate"]
