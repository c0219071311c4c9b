"""The attention pointing game: does the model look at the object it names?

For every generated word that names an object category present in the image (per a COCO instances
file), take that step's attention map upsampled to the image size; it is a *hit* when the map's peak
falls inside a box of that category (strict), and a *tolerant* hit when it lies within 15 px of one, the
tolerance of the original pointing game (Zhang et al., 2016): a peak on the cell just outside a small
object's edge is a strict miss and a tolerant hit. Hard attention uses the chosen grid cell instead of the peak.

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

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.instances import _STRIP, ImageBoxes, InstancesIndex, category_for_word
from ..errors import DataError

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
    tally: dict[str, list[float]] = {}  # category -> [hits, words, random sum, centre hits, tolerant hits]
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
                _tally(tally.setdefault(cat, [0.0] * 5), img.boxes(cat), img, x, y)
            value = word.strip(_STRIP).lower()
            if cat is None and value in values:
                _tally(attr_tally.setdefault(value, [0.0] * 5), img.attribute_boxes(value), img, x, y)
    if n_items == 0:
        raise DataError("pointing game got no captioned images; check the captions file")
    if unmatched == n_items:
        raise DataError(f"{instances.source} matches none of the {n_items} images; "
                        f"is it for another dataset?")
    if unmatched:
        warnings.warn(f"{unmatched} of {n_items} images are not in {instances.source}; "
                      f"they are left out of the pointing game", stacklevel=2)
    total = np.sum(list(tally.values()), axis=0) if tally else np.zeros(5)
    attr_total = np.sum(list(attr_tally.values()), axis=0) if attr_tally else np.zeros(5)
    return {
        "overall": _summary(total),
        "per_category": {c: _summary(tally[c]) for c in sorted(tally)},
        "attribute_words": {"overall": _summary(attr_total),
                            "per_value": {v: _summary(attr_tally[v]) for v in sorted(attr_tally)}},
        "unmatched_images": unmatched,
        "images": n_items - unmatched,
    }


#: the original pointing game's tolerance (Zhang et al., 2016): a peak this many pixels from the box still hits
TOLERANCE_PX = 15.0


def _tally(row: list[float], boxes: np.ndarray, img: ImageBoxes, x: float, y: float) -> None:
    """Add one scored word to ``row`` = [hits, words, random-baseline sum, centre hits, tolerant hits]."""
    row[0] += _inside(boxes, x, y)
    row[1] += 1
    row[2] += _union_area(boxes, img.width, img.height) / (img.width * img.height)
    row[3] += _inside(boxes, img.width / 2, img.height / 2)
    row[4] += box_distance(boxes, x, y) <= TOLERANCE_PX


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
    hits, words, rnd, centre, near = (float(v) for v in t)
    rate = (lambda v: v / words) if words else (lambda v: None)
    return {"hits": int(hits), "words": int(words), "hit_rate": rate(hits), "hit_rate_tolerant": rate(near),
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


def box_distance(boxes: np.ndarray, x: float, y: float) -> float:
    """Distance in pixels from (x, y) to the nearest of the n×4 (x0, y0, x1, y1) boxes (0 inside one)."""
    dx = np.maximum(np.maximum(boxes[:, 0] - x, x - boxes[:, 2]), 0.0)
    dy = np.maximum(np.maximum(boxes[:, 1] - y, y - boxes[:, 3]), 0.0)
    return float(np.sqrt(dx * dx + dy * dy).min())


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
