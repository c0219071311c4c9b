"""The attention pointing game: does the model look at the object it names?

For every generated word that names an object category present in the image (per a COCO instances
file), take that step's attention map upsampled to the image size; it is a *hit* when the map's peak
falls inside a box of that category. Hard attention uses the chosen grid cell instead of the peak.

Bilinear upsampling (pixel centres, ``align_corners=False``) is a convex combination of neighbouring
cells, so it never exceeds the largest cell and reaches it exactly at that cell's centre: the peak of the
upsampled map *is* the centre of the most-attended cell, ``((col + ½)·W/gw, (row + ½)·H/gh)``. We use
that point directly, which avoids building H×W maps and the flat border regions (edge clamping) whose
raster-order argmax would land on the image corner instead. Ties between cells go to the first in
row-major order.

Two baselines sit beside the hit rate, averaged over the same words: *random* — a uniformly random
point hits with probability (union area of that category's boxes) / (image area); *centre* — always
pointing at the image centre.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from ..errors import DataError

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


# ------------------------------------------------------------------------------------ the game
@dataclass
class PointingItem:
    """One captioned image: its words, one gh×gw attention map per word, and hard-attention cells if any."""

    image: str | int  # file name / path, or COCO image id
    words: list[str]
    attention: np.ndarray  # T×gh×gw, T = len(words)
    locations: list[tuple[int, int]] | None = None  # (row, col) per word, hard attention


def pointing_game(items: Iterable[PointingItem], instances: InstancesIndex) -> dict:
    """Hits / words per category and overall, with random and centre-point baselines.

    Returns ``{"overall": {...}, "per_category": {name: {...}}, "unmatched_images": n, "images": m}``
    where each ``{...}`` has ``hits``, ``words``, ``hit_rate``, ``random_baseline`` and
    ``center_baseline`` (rates in [0, 1]; None when no word was scored).
    """
    tally: dict[str, list[float]] = {}  # category -> [hits, words, random sum, centre hits]
    attr_tally: dict[str, list[float]] = {}  # attribute value ("blue") -> the same, against its objects' boxes
    word_cat: dict[str, str | None] = {}
    n_items = unmatched = 0
    for item in items:
        n_items += 1
        img = instances.find(item.image)
        if img is None:
            unmatched += 1
            continue
        att, locs = _check_item(item)
        present = {c for c, _ in img.objects}
        values = {v for v, _ in img.attributes}
        for t, word in enumerate(item.words):
            if word not in word_cat:
                word_cat[word] = category_for_word(word, instances.categories)
            cat = word_cat[word]
            if locs is None:
                x, y = peak_point(att[t], img.width, img.height)
            else:
                x, y = cell_centre(locs[t], att.shape[1:], img.width, img.height)
            if cat is not None and cat in present:
                _tally(tally.setdefault(cat, [0.0] * 4), img.boxes(cat), img, x, y)
            value = word.strip(_STRIP).lower()
            if cat is None and value in values:
                _tally(attr_tally.setdefault(value, [0.0] * 4), img.attribute_boxes(value), img, x, y)
    if n_items == 0:
        raise DataError("pointing game got no captioned images; check the captions file")
    if unmatched == n_items:
        raise DataError(f"{instances.source} matches none of the {n_items} images; "
                        f"is it for another dataset?")
    if unmatched:
        warnings.warn(f"{unmatched} of {n_items} images are not in {instances.source}; "
                      f"they are left out of the pointing game", stacklevel=2)
    total = np.sum(list(tally.values()), axis=0) if tally else np.zeros(4)
    attr_total = np.sum(list(attr_tally.values()), axis=0) if attr_tally else np.zeros(4)
    return {
        "overall": _summary(total),
        "per_category": {c: _summary(tally[c]) for c in sorted(tally)},
        "attribute_words": {"overall": _summary(attr_total),
                            "per_value": {v: _summary(attr_tally[v]) for v in sorted(attr_tally)}},
        "unmatched_images": unmatched,
        "images": n_items - unmatched,
    }


def _tally(row: list[float], boxes: np.ndarray, img: ImageBoxes, x: float, y: float) -> None:
    """Add one scored word to ``row`` = [hits, words, random-baseline sum, centre hits]."""
    row[0] += _inside(boxes, x, y)
    row[1] += 1
    row[2] += _union_area(boxes, img.width, img.height) / (img.width * img.height)
    row[3] += _inside(boxes, img.width / 2, img.height / 2)


def cell_centre(cell: tuple[int, int], grid_shape: tuple[int, int], width: float, height: float,
                ) -> tuple[float, float]:
    """Image coordinates (x, y) of the centre of grid cell (row, col)."""
    (row, col), (gh, gw) = cell, grid_shape
    return (col + 0.5) * width / gw, (row + 0.5) * height / gh


def peak_point(alpha: np.ndarray, width: float, height: float) -> tuple[float, float]:
    """Where the bilinearly upsampled gh×gw map ``alpha`` peaks, in image coordinates (see module doc)."""
    cell = np.unravel_index(int(np.argmax(alpha)), alpha.shape)
    return cell_centre((int(cell[0]), int(cell[1])), alpha.shape, width, height)


def _summary(t: Sequence[float]) -> dict[str, Any]:
    hits, words, rnd, centre = (float(v) for v in t)
    rate = (lambda v: v / words) if words else (lambda v: None)
    return {"hits": int(hits), "words": int(words), "hit_rate": rate(hits),
            "random_baseline": rate(rnd), "center_baseline": rate(centre)}


def _check_item(item: PointingItem) -> tuple[np.ndarray, list[tuple[int, int]] | None]:
    name = item.image
    att = np.asarray(item.attention, dtype=np.float64)
    if att.ndim != 3 or 0 in att.shape[1:]:
        raise DataError(f"attention for image {name!r} has shape {att.shape}, expected T×gh×gw (one map per word)")
    if att.shape[0] != len(item.words):
        raise DataError(f"attention for image {name!r} has {att.shape[0]} maps for {len(item.words)} words; "
                        f"give one map per generated word")
    if not np.all(np.isfinite(att)):
        raise DataError(f"attention for image {name!r} contains NaN or inf; the model output is broken")
    if item.locations is None:
        return att, None
    gh, gw = att.shape[1:]
    locs = [tuple(int(v) for v in loc) for loc in item.locations]
    if len(locs) != len(item.words) or any(len(loc) != 2 for loc in locs):
        raise DataError(f"image {name!r}: need one (row, col) location per word, got {len(locs)} "
                        f"for {len(item.words)} words")
    if any(not (0 <= r < gh and 0 <= c < gw) for r, c in locs):
        raise DataError(f"image {name!r}: a hard-attention location lies outside the {gh}×{gw} grid")
    return att, locs  # type: ignore[return-value]


def _inside(boxes: np.ndarray, x: float, y: float) -> bool:
    """Whether (x, y) lies in any of the n×4 (x0, y0, x1, y1) boxes, edges included."""
    return bool(np.any((boxes[:, 0] <= x) & (x <= boxes[:, 2]) & (boxes[:, 1] <= y) & (y <= boxes[:, 3])))


def _union_area(boxes: np.ndarray, width: float, height: float) -> float:
    """Exact area of the union of boxes clipped to the image, by coordinate compression."""
    b = boxes.copy()
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, width)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, height)
    xs, ys = np.unique(b[:, [0, 2]]), np.unique(b[:, [1, 3]])
    if len(xs) < 2 or len(ys) < 2:
        return 0.0
    x0, x1, y0, y1 = xs[:-1], xs[1:], ys[:-1], ys[1:]
    cover = ((b[:, 0, None, None] <= x0) & (x1 <= b[:, 2, None, None])
             & (b[:, 1, None, None] <= y0[:, None]) & (y1[:, None] <= b[:, 3, None, None])).any(axis=0)
    return float((cover * np.outer(y1 - y0, x1 - x0)).sum())


def items_from_caption_records(records: Iterable[Mapping[str, Any]]) -> list[PointingItem]:
    """PointingItems from ``caption --json`` output: ``{"image", "words": [{"word", "attention", "location"?}]}``."""
    items = []
    for n, rec in enumerate(records):
        try:
            words = list(rec["words"])
            image = rec["image"]
            tokens = [str(w["word"]) for w in words]
            att = np.array([w["attention"] for w in words], dtype=np.float64)
        except KeyError as exc:
            raise DataError(f"caption record #{n} lacks the {exc} field; expected caption --json output "
                            f"with words and their attention maps") from None
        except (TypeError, ValueError):
            raise DataError(f"caption record #{n} has malformed words or attention maps (each must be an "
                            f"equal-sized grid of numbers); expected caption --json output") from None
        if not words:
            att = att.reshape(0, 1, 1)
        locs = [tuple(w["location"]) for w in words] if words and all("location" in w for w in words) else None
        items.append(PointingItem(image, tokens, att, locs))  # type: ignore[arg-type]
    return items
