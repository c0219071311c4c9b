"""Every dataset format behind one call: :func:`load_records` (``--format coco | karpathy | flickr8k``).

This is the one place a new format is added: a loader module beside ``coco.py`` and a line in
:data:`LOADERS`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from ..errors import ConfigError
from .coco import coco_split_from_name, load_coco, load_karpathy
from .flickr8k import load_flickr8k
from .records import Record, split_list



def _load_coco(path: str | os.PathLike, images_dir: str | os.PathLike | None, splits: list[str] | None,
               skip_missing: bool) -> list[Record]:
    """A COCO captions file holds one split: the one asked for, else the one its name says."""
    if splits is None:
        guessed = coco_split_from_name(Path(path))
        if guessed is None:
            raise ConfigError(f"cannot tell which split {path} holds from its name; pass --split")
        splits = [guessed]
    if len(splits) != 1:
        raise ConfigError(f"a COCO captions file holds one split, got {', '.join(splits)}; load each file separately")
    return load_coco(path, images_dir, splits[0], skip_missing=skip_missing)


#: --format name -> loader(path, images_dir, splits or None for all, skip_missing)
LOADERS: dict[str, Callable[..., list[Record]]] = {
    "coco": _load_coco,
    "karpathy": lambda path, images, splits, skip: load_karpathy(path, images, splits, skip_missing=skip),
    "flickr8k": lambda path, images, splits, skip: load_flickr8k(path, images, splits, skip_missing=skip),
}
FORMATS = tuple(LOADERS)


def load_records(
    fmt: str,
    path: str | os.PathLike,
    images_dir: str | os.PathLike | None = None,
    split: str | Sequence[str] | None = None,
    skip_missing: bool = False,
) -> list[Record]:
    """Load any supported format; ``split`` may be ``"train"``, ``"train,restval"`` or a list.

    For COCO, ``split`` labels the records and defaults to the one in the file name
    (``captions_val2014.json`` -> ``"val"``); for Karpathy and Flickr8k it selects splits (all when None).
    """
    kind = fmt.strip().lower()
    if kind not in LOADERS:
        raise ConfigError(f"unknown dataset format {fmt!r}; choose from {', '.join(FORMATS)}")
    return LOADERS[kind](path, images_dir, split_list(split), skip_missing)
