"""COCO instances files: the boxes of each image's objects, by category and attribute.

The pointing game (evaluation) scores attention against these boxes, and box supervision (training)
turns them into attention targets; both find an image's boxes here, by file name or COCO id.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from ..errors import DataError
from .records import Record

Box = tuple[float, float, float, float]  # COCO [x, y, w, h] in pixels


@dataclass(frozen=True)
class ImageBoxes:
    """One image of an instances file: its size and labelled boxes."""

    id: int
    file_name: str
    width: float
    height: float
    objects: tuple[tuple[str, Box], ...]
    attributes: tuple[tuple[str, Box], ...] = ()  # (lower-case attribute value, box), e.g. ("blue", ...)

    def boxes(self, category: str) -> np.ndarray:
        """Boxes of ``category`` as an n×4 array of corners (x0, y0, x1, y1)."""
        return _corners([b for c, b in self.objects if c == category])

    def attribute_boxes(self, value: str) -> np.ndarray:
        """Boxes of the objects with attribute ``value`` ("blue"), as corners."""
        return _corners([b for v, b in self.attributes if v == value])


def _corners(xywh_boxes: Sequence[Box]) -> np.ndarray:
    xywh = np.array(xywh_boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


class InstancesIndex:
    """Images of a COCO instances file, found by id, file name, or the base name of a path."""

    def __init__(self, images: Iterable[ImageBoxes], categories: Iterable[str], source: str = "instances") -> None:
        self.images = list(images)
        self.categories = tuple(dict.fromkeys(categories))
        self.source = source
        self._by_id = {im.id: im for im in self.images}
        self._by_name = {im.file_name: im for im in self.images}
        base: dict[str, list[ImageBoxes]] = {}
        for im in self.images:
            base.setdefault(PurePath(im.file_name).name, []).append(im)
        self._by_base = {k: v[0] for k, v in base.items() if len(v) == 1}  # ambiguous base names need the full name

    def __len__(self) -> int:
        return len(self.images)

    def find(self, image: str | int) -> ImageBoxes | None:
        """The entry for an image id, a file name as in the file, or any path ending in that name."""
        if isinstance(image, (int, np.integer)) and not isinstance(image, bool):
            return self._by_id.get(int(image))
        key = str(image)
        hit = self._by_name.get(key) or self._by_base.get(PurePath(key.replace("\\", "/")).name)
        if hit is None and key.isdigit():
            hit = self._by_id.get(int(key))
        return hit


# ------------------------------------------------------------------------------------------ loading
def load_instances(path: str | Path) -> InstancesIndex:
    """Read a COCO ``instances_*.json`` (images with width/height, categories, annotations with bbox)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"instances file not found: {path}; pass a COCO instances_<split>.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); pass a COCO instances_<split>.json") from None
    missing = [k for k in ("images", "annotations", "categories")
               if not isinstance(data, dict) or not isinstance(data.get(k), list)]
    if missing:
        raise DataError(f"{path} is not a COCO instances file (no {missing[0]!r} list); captions files have "
                        f"no boxes, pass instances_<split>.json")
    try:
        cats = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        sizes = {}
        for im in data["images"]:
            sizes[int(im["id"])] = (str(im["file_name"]), float(im["width"]), float(im["height"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: a category or image entry lacks a valid {exc} field; "
                        f"expected categories with id/name and images with id/file_name/width/height") from None
    if len(sizes) != len(data["images"]):
        raise DataError(f"{path}: duplicate image ids; fix or regenerate the instances file")
    bad_size = [i for i, (_, w, h) in sizes.items() if not (w > 0 and h > 0)]
    if bad_size:
        raise DataError(f"{path}: {len(bad_size)} images have a non-positive width/height "
                        f"(first id: {bad_size[0]}); fix the instances file")
    objects: dict[int, list[tuple[str, Box]]] = {i: [] for i in sizes}
    attributes: dict[int, list[tuple[str, Box]]] = {i: [] for i in sizes}
    bad: list[int] = []
    for n, ann in enumerate(data["annotations"]):
        box = _parse_annotation(ann, cats, sizes)
        if box is None:
            bad.append(n)
        else:
            objects[ann["image_id"]].append(box)
            attrs = ann.get("attributes")
            if isinstance(attrs, dict):  # captioner synth: {"colour": "blue", "size": "small"}
                attributes[ann["image_id"]].extend((v.lower(), box[1]) for v in attrs.values() if isinstance(v, str))
    if bad:
        raise DataError(f"{path}: {len(bad)} annotations lack a known image_id, category_id or a bbox "
                        f"[x, y, w, h] with w, h >= 0 (first: annotation #{bad[0]}); fix the instances file")
    images = [ImageBoxes(i, name, w, h, tuple(objects[i]), tuple(attributes[i])) for i, (name, w, h) in sizes.items()]
    return InstancesIndex(images, cats.values(), source=str(path))


def _parse_annotation(ann: Any, cats: Mapping[int, str], sizes: Mapping[int, Any]) -> tuple[str, Box] | None:
    try:
        bbox = [float(v) for v in ann["bbox"]]
        image_id, cat_id = ann["image_id"], ann["category_id"]
    except (KeyError, TypeError, ValueError):
        return None
    ok = (len(bbox) == 4 and all(math.isfinite(v) for v in bbox) and bbox[2] >= 0 and bbox[3] >= 0
          and image_id in sizes and cat_id in cats)
    return (cats[cat_id], (bbox[0], bbox[1], bbox[2], bbox[3])) if ok else None


# ------------------------------------------------------------------------------------ word matching
_STRIP = "\"'.,;:!?()[]{}"


def category_for_word(word: str, categories: Iterable[str]) -> str | None:
    """The category a caption word names, or None.

    Rules, case-insensitive, first match wins: (1) the word is a category name ("dog"); (2) a simple
    plural of one: -s, -es, -ies→-y, -ves→-f/-fe ("circles" → "circle", "boxes" → "box"); (3) the
    word, or its singular, is the last word of exactly one multi-word category ("light" → "traffic
    light", "dogs" stays "dog" by rule 1). No synonyms: "man" does not name "person".
    """
    w = word.strip().strip(_STRIP).lower()
    if not w:
        return None
    names = {c.lower(): c for c in categories}
    forms = [w] + _singulars(w)
    for form in forms:
        if form in names:
            return names[form]
    for form in forms:
        multi = [c for lc, c in names.items() if " " in lc and lc.rsplit(" ", 1)[1] == form]
        if len(multi) == 1:
            return multi[0]
    return None


def _singulars(w: str) -> list[str]:
    out = []
    if w.endswith("ies") and len(w) > 3:
        out.append(w[:-3] + "y")
    if w.endswith("ves") and len(w) > 3:
        out += [w[:-3] + "f", w[:-3] + "fe"]
    if w.endswith("es") and len(w) > 2:
        out.append(w[:-2])
    if w.endswith("s") and not w.endswith("ss") and len(w) > 1:
        out.append(w[:-1])
    return out


def instance_key(record: Record, instances: InstancesIndex) -> str | int:
    """How ``record`` is found in ``instances``: by file name first, then by COCO id."""
    if instances.find(record.image_path) is not None:
        return record.image_path
    if record.image_id.isdigit() and instances.find(int(record.image_id)) is not None:
        return int(record.image_id)
    return record.image_path
