"""COCO captions JSON and Karpathy's split JSON -> records.

COCO: ``captions_<split>.json`` with ``images`` and ``annotations`` (one file per split). Karpathy:
``dataset_coco.json`` / ``dataset_flickr8k.json`` / ``dataset_flickr30k.json``, every split in one file."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from ..errors import DataError
from .records import (
    Record,
    canon_split,
    finish_records,
    guess_images_dir,
    merge_entries,
    split_label,
    split_list,
    read_json,
)


# ------------------------------------------------------------------------------------ COCO
def coco_split_from_name(path: Path) -> str | None:
    """``captions_val2014.json`` -> ``"val"``; None when the name does not say."""
    m = re.match(r"captions_([a-z]+)", path.stem.lower())
    return canon_split(m.group(1)) if m else None


def load_coco(
    captions_json: str | os.PathLike,
    images_dir: str | os.PathLike | None,
    split: str,
    skip_missing: bool = False,
) -> list[Record]:
    """Records from a COCO captions file; every record gets ``split`` (COCO files hold one split each).

    Image path = ``images_dir / file_name``. With ``images_dir=None`` the folder is found by looking for
    the first listed image in ``images/``, ``images/<split>/``, ``../<name>2014/`` style folders beside the
    file, and the file's own folder. Images without any caption are left out.
    """
    source = Path(captions_json)
    data = read_json(source)
    bad = f"{source}: not a COCO captions file"
    if not isinstance(data, dict):
        raise DataError(f"{bad}: expected a JSON object with 'images' and 'annotations'")
    for key in ("images", "annotations"):
        if key not in data:
            raise DataError(f"{bad}: missing key {key!r}")
        if not isinstance(data[key], list):
            raise DataError(f"{bad}: {key!r} is not a list")

    names: dict[str, str] = {}  # image id -> file name, in file order
    for k, img in enumerate(data["images"]):
        if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
            raise DataError(f"{bad}: images[{k}] needs an 'id' and a 'file_name'")
        image_id = str(img["id"])
        if names.setdefault(image_id, img["file_name"]) != img["file_name"]:
            raise DataError(
                f"{source}: image id {image_id} is listed with two file names, "
                f"{names[image_id]!r} and {img['file_name']!r}"
            )

    captions: dict[str, list[str]] = {}
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise DataError(f"{bad}: annotations[{k}] has no 'image_id'")
        if not isinstance(ann.get("caption"), str):
            hint = " (is this an instances file?)" if isinstance(ann, dict) and "bbox" in ann else ""
            raise DataError(f"{bad}: annotations[{k}] has no 'caption' string{hint}")
        image_id = str(ann["image_id"])
        if image_id not in names:
            raise DataError(f"{source}: annotations[{k}] refers to image id {image_id}, which is not in 'images'")
        caption = ann["caption"].strip()
        if caption:
            captions.setdefault(image_id, []).append(caption)

    split = canon_split(split)
    if images_dir is None:
        first = next((names[i] for i in names if i in captions), None)
        stem = source.stem.lower().removeprefix("captions_")
        folder = source.parent
        images_dir = guess_images_dir(
            source,
            [folder / "images", folder / "images" / split, folder.parent / stem, folder / stem, folder],
            first,
        )
    images_dir = Path(images_dir)
    records = merge_entries(
        (image_id, str(images_dir / names[image_id]), split, caps) for image_id, caps in captions.items()
    )
    return finish_records(records, source, images_dir, [split], skip_missing)


# ------------------------------------------------------------------------------------ Karpathy
def load_karpathy(
    split_json: str | os.PathLike,
    images_dir: str | os.PathLike | None,
    splits: str | Sequence[str] | None = None,
    skip_missing: bool = False,
) -> list[Record]:
    """Records from a Karpathy split file, keeping only ``splits`` (all when None).

    Image path = ``images_dir / filepath / filename`` (``filepath`` is optional); caption = the sentence's
    ``raw`` text, else its tokens joined by spaces; image_id = ``cocoid`` if present, else the file name.
    "restval" is its own split: ask for ``["train", "restval"]`` to train on both. With
    ``images_dir=None`` the folder is found beside the file (``images/``, the file's folder, its parent).
    """
    source = Path(split_json)
    wanted = split_list(splits)
    data = read_json(source)
    bad = f"{source}: not a Karpathy split file"
    if not isinstance(data, dict):
        raise DataError(f"{bad}: expected a JSON object with 'images'")
    if "images" not in data:
        raise DataError(f"{bad}: missing key 'images'")
    if not isinstance(data["images"], list):
        raise DataError(f"{bad}: 'images' is not a list")

    entries: list[tuple[str, str, str, list[str]]] = []  # (id, relative path, split, captions)
    present: set[str] = set()
    for k, img in enumerate(data["images"]):
        if not isinstance(img, dict):
            raise DataError(f"{bad}: images[{k}] is not an object")
        for key in ("filename", "split", "sentences"):
            if key not in img:
                raise DataError(f"{bad}: images[{k}] has no {key!r}")
        filename, filepath, split = img["filename"], img.get("filepath", ""), img["split"]
        if not isinstance(filename, str) or not isinstance(filepath, str) or not isinstance(split, str):
            raise DataError(f"{bad}: images[{k}] 'filename', 'filepath' and 'split' must be strings")
        if not isinstance(img["sentences"], list):
            raise DataError(f"{bad}: images[{k}] 'sentences' is not a list")
        split = canon_split(split)
        present.add(split)
        if wanted is not None and split not in wanted:
            continue
        captions = []
        for j, sent in enumerate(img["sentences"]):
            raw = sent.get("raw") if isinstance(sent, dict) else None
            if not isinstance(raw, str):
                tokens = sent.get("tokens") if isinstance(sent, dict) else None
                if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                    raise DataError(f"{bad}: images[{k}] sentences[{j}] has neither 'raw' text nor 'tokens'")
                raw = " ".join(tokens)
            if raw.strip():
                captions.append(raw.strip())
        image_id = str(img["cocoid"]) if "cocoid" in img else filename
        entries.append((image_id, os.path.join(filepath, filename) if filepath else filename, split, captions))

    if images_dir is None:
        first = next((rel for _, rel, _, caps in entries if caps), None)
        images_dir = guess_images_dir(
            source, [source.parent / "images", source.parent, source.parent.parent], first
        )
    images_dir = Path(images_dir)
    records = merge_entries((i, str(images_dir / rel), s, caps) for i, rel, s, caps in entries)
    if not records and wanted and present:
        raise DataError(
            f"no images in {split_label(wanted)} of {source} (its splits: {', '.join(sorted(present))})"
        )
    return finish_records(records, source, images_dir, wanted, skip_missing)
