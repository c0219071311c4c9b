"""Caption datasets on disk -> one list of :class:`Record` per split, whatever the file format.

Three formats are read: COCO captions JSON (``captions_train2014.json``), Karpathy's split JSON
(``dataset_coco.json`` / ``dataset_flickr8k.json`` / ``dataset_flickr30k.json``) and Flickr8k's own
text files (``Flickr8k.token.txt`` or the ``captions.txt`` CSV, plus the ``Flickr_8k.*Images.txt`` lists).
Everything downstream (vocabulary, training, evaluation) sees only records, so each format is parsed
and checked once, here, and every problem with the files becomes a one-line :class:`DataError`.

Records are returned sorted by ``image_id`` (all-digit ids numerically and before the others, the
others as strings), so the same data gives the same order whichever format it came in. Captions keep
their file order; entries for the same image are merged into one record.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import DataError

_SPLIT_ALIASES = {"dev": "val", "valid": "val", "validation": "val"}
_SHOW_MISSING = 3  # how many missing file names an error message lists


@dataclass(frozen=True)
class Record:
    """One image and all its captions."""

    image_path: str  # images_dir joined with the name from the file (not resolved)
    captions: tuple[str, ...]  # raw captions, surrounding whitespace removed
    split: str  # "train" | "val" | "test" | "restval" | ... ("dev" becomes "val")
    image_id: str  # COCO id / Karpathy cocoid as str, else the file name


# ------------------------------------------------------------------------------------ file reading
def check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a file")


def read_text(path: str | os.PathLike) -> str:
    """Whole file as text (UTF-8, BOM tolerated), or a one-line DataError naming the file."""
    p = Path(path)
    check_file(p)
    try:
        return p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not UTF-8 text (bad byte at offset {e.start})") from None
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror or e})") from None


def read_json(path: str | os.PathLike) -> Any:
    """Parsed JSON, or a one-line DataError: missing file, unreadable, or not valid JSON (with position)."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON (line {e.lineno} col {e.colno}: {e.msg})") from None


# ------------------------------------------------------------------------------------ helpers
def _id_key(image_id: str) -> tuple[int, int, str]:
    """Sort key: numeric ids numerically (COCO), then other ids as strings (file names)."""
    return (0, int(image_id), "") if image_id.isdigit() else (1, 0, image_id)


def canon_split(name: str) -> str:
    name = name.strip().lower()
    return _SPLIT_ALIASES.get(name, name)


def split_list(split: str | Sequence[str] | None) -> list[str] | None:
    """None, ``"train"``, ``"train,restval"`` or ``["train", "restval"]`` -> canonical names (or None)."""
    if split is None:
        return None
    parts = split.split(",") if isinstance(split, str) else list(split)
    names = [canon_split(s) for s in parts if s.strip()]
    return names or None


def split_label(splits: Sequence[str] | None) -> str:
    return "any split" if not splits else "split " + ", ".join(repr(s) for s in splits)


def guess_images_dir(source: Path, candidates: Iterable[Path], probe: str | None) -> Path:
    """The first candidate folder holding ``probe`` (the first image the file lists)."""
    candidates = list(dict.fromkeys(candidates))
    for folder in candidates:
        if probe is not None and (folder / probe).is_file():
            return folder
    if probe is None:  # nothing listed; the caller reports the empty split
        return candidates[0]
    looked = ", ".join(str(c) for c in candidates)
    raise DataError(f"{source}: cannot find the images it lists (looked for {probe} in {looked}); pass --images DIR")


def merge_entries(entries: Iterable[tuple[str, str, str, list[str]]]) -> list[Record]:
    """(image_id, image_path, split, captions) entries -> records, same image merged, sorted by id."""
    merged: dict[str, tuple[str, str, list[str]]] = {}
    for image_id, image_path, split, captions in entries:
        if image_id in merged:
            merged[image_id][2].extend(captions)
        else:
            merged[image_id] = (image_path, split, list(captions))
    return [
        Record(image_path=path, captions=tuple(caps), split=split, image_id=image_id)
        for image_id, (path, split, caps) in sorted(merged.items(), key=lambda kv: _id_key(kv[0]))
        if caps
    ]


def finish_records(
    records: list[Record], source: Path, images_dir: Path, splits: Sequence[str] | None, skip_missing: bool
) -> list[Record]:
    """Refuse an empty result, then check that the image files exist."""
    if not records:
        raise DataError(f"no images in {split_label(splits)} of {source}")
    kept = check_images_exist(records, skip_missing, source=source, images_dir=images_dir)
    if not kept:
        raise DataError(f"no images in {split_label(splits)} of {source}: all {len(records)} are missing from {images_dir}")
    return kept


def check_images_exist(
    records: Sequence[Record],
    skip_missing: bool,
    *,
    source: str | os.PathLike | None = None,
    images_dir: str | os.PathLike | None = None,
) -> list[Record]:
    """Records whose image file exists.

    A missing file is a DataError (listing the first few) unless ``skip_missing``, in which case one
    warning gives the count and those records are dropped. ``source``/``images_dir`` only word the message.
    """
    missing = [r for r in records if not os.path.isfile(r.image_path)]
    if not missing:
        return list(records)
    if images_dir is None:
        images_dir = os.path.commonpath([os.path.dirname(r.image_path) or "." for r in missing])
    listed = f"listed in {source} " if source is not None else ""
    summary = f"{len(missing)} of {len(records)} images {listed}are missing from {images_dir}"
    if not skip_missing:
        shown = []
        for r in missing[:_SHOW_MISSING]:
            try:
                shown.append(os.path.relpath(r.image_path, images_dir))
            except ValueError:  # different drive on Windows
                shown.append(os.path.basename(r.image_path))
        more = ", ..." if len(missing) > _SHOW_MISSING else ""
        raise DataError(
            f"{summary} (first: {', '.join(shown)}{more}); fix the paths or pass --skip-missing"
        )
    warnings.warn(f"skipping {summary}", stacklevel=2)
    gone = {id(r) for r in missing}
    return [r for r in records if id(r) not in gone]


