"""Synthetic COCO-style captioning data: coloured shapes on textured backgrounds.

Why: tests, CI and the attention pointing game need a dataset whose objects have known, tight boxes and
whose captions name those objects by their category word, stored in real COCO format so the loaders used
for COCO are the ones exercised here. Every image is a pure function of ``(seed, index)``, so re-runs and
any number of worker processes give byte-identical files.
"""

from __future__ import annotations

import argparse
import colorsys
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..errors import ConfigError, DataError
from ..atomic import write_json

#: Category names; each caption that mentions an object uses one of these verbatim (plural: add "s").
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "white")
SIZES: tuple[str, ...] = ("small", "large")
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Nominal RGB of each colour; objects are drawn within a few levels of it (jitter + shading + noise).
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 215, 40),
    "purple": (140, 60, 190), "orange": (245, 140, 30), "white": (245, 245, 245),
}
FORMAT_VERSION = "1"

_SIZE_RANGE = {"small": (0.14, 0.21), "large": (0.28, 0.36)}  # shape extent as a fraction of the image side
_SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
_BACKGROUNDS = ("gradient", "stripes", "blotches")
_BG_WORDS = {"gradient": ("shaded", "gradient"), "stripes": ("striped",), "blotches": ("mottled", "textured")}
_NUMBERS = {2: "two", 3: "three"}
_SUPERSAMPLE = 2  # antialiased edges for the price of a 2x mask over each object's box only
_GAP = 4  # px of background kept between object boxes, so one box never contains another object's pixels
_MARGIN = 2  # px kept clear of the image border
_MIN_SIZE, _MAX_SIZE = 64, 2048
_CHUNK = 32  # images per worker task


# ---------------------------------------------------------------- rendering


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation, mid-brightness colour, so saturated objects stay visible on it."""
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.2, 0.75))
    return np.array([r, g, b], dtype=np.float32) * 255.0


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    """A gradient, stripes or low-frequency blotches between two muted colours, plus pixel noise."""
    kind = _pick(rng, _BACKGROUNDS)
    c0, c1 = _muted(rng), _muted(rng)
    coords = np.arange(size, dtype=np.float32) / size
    xx, yy = coords[None, :], coords[:, None]
    theta = rng.uniform(0.0, 2 * math.pi)
    proj = xx * math.cos(theta) + yy * math.sin(theta)
    if kind == "gradient":
        t = (proj - proj.min()) / max(float(proj.max() - proj.min()), 1e-6)
    elif kind == "stripes":
        period = rng.uniform(6.0, 32.0) / size
        wave = np.sin(2 * math.pi * proj / period + rng.uniform(0, 2 * math.pi))
        t = np.clip(0.5 + 0.5 * wave * rng.uniform(1.0, 4.0), 0.0, 1.0)
    else:
        k = int(rng.integers(3, 9))
        grid = Image.fromarray(rng.random((k, k), dtype=np.float32), mode="F")
        t = np.clip(np.asarray(grid.resize((size, size), Image.BICUBIC)), 0.0, 1.0)
    # channel-first (3, H, W): numpy broadcasts over a trailing axis of 3 several times slower
    return c0[:, None, None] + (c1 - c0)[:, None, None] * t[None], kind


_NOISE: dict[int, np.ndarray] = {}


def _noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """A (3, size, size) window of unit Gaussian noise at a random offset in a fixed table.

    Drawing 150k fresh normals per image cost as much as the rest of the picture; a table built from a
    constant seed keeps the output a pure function of (seed, index) in every process.
    """
    if size not in _NOISE:
        _NOISE[size] = np.random.default_rng(12345).standard_normal((3, 2 * size, 2 * size), dtype=np.float32)
    oy, ox = rng.integers(0, size, 2)
    return _NOISE[size][:, oy:oy + size, ox:ox + size]


def _outline(shape: str, extent: float, rng: np.random.Generator) -> np.ndarray:
    """Polygon vertices (K x 2, centred on 0) of ``shape`` about ``extent`` px across."""
    r = extent / 2
    if shape == "circle":
        a = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        return np.stack([r * np.cos(a), r * np.sin(a)], 1)
    if shape == "square":
        pts, tilt = np.array([[-r, -r], [r, -r], [r, r], [-r, r]]), 15
    elif shape == "triangle":
        h = r * 0.87
        pts, tilt = np.array([[0, -h], [r, h], [-r, h]]), 15
    elif shape == "star":
        a = np.arange(10) * math.pi / 5 - math.pi / 2
        rad = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        pts, tilt = np.stack([rad * np.cos(a), rad * np.sin(a)], 1), 36
    elif shape == "diamond":
        pts, tilt = np.array([[0, -r], [0.6 * r, 0], [0, r], [-0.6 * r, 0]]), 10
    else:  # pragma: no cover - SHAPES and this function change together
        raise ValueError(shape)
    ang = math.radians(rng.uniform(-tilt, tilt))
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    return pts @ rot.T


def _overlaps(box: tuple[float, float, float, float], placed: list[tuple[float, float, float, float]]) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < b[2] + _GAP and b[0] < x1 + _GAP and y0 < b[3] + _GAP and b[1] < y1 + _GAP for b in placed)


def _place(rng: np.random.Generator, shape: str, size_cls: str, size: int,
           placed: list[tuple[float, float, float, float]]) -> np.ndarray | None:
    """Vertices of the shape at a random spot clear of ``placed``, or None after enough failed tries."""
    lo, hi = _SIZE_RANGE[size_cls]
    pts = _outline(shape, rng.uniform(lo, hi) * size, rng)
    mn, mx = pts.min(0), pts.max(0)
    for _ in range(60):
        centre = rng.uniform(_MARGIN - mn, size - _MARGIN - mx)
        box = (*(centre + mn), *(centre + mx))
        if not _overlaps(box, placed):
            placed.append(box)
            return pts + centre
    return None


def _paint(canvas: np.ndarray, pts: np.ndarray, rgb: np.ndarray, rng: np.random.Generator) -> tuple[list[int], float]:
    """Composite a shaded, antialiased polygon into ``canvas``; return its tight COCO bbox and pixel area.

    The box comes from the mask actually drawn (every pixel with any coverage), not from the vertices,
    so it bounds exactly the pixels that show the shape.
    """
    size = canvas.shape[1]
    x0, y0 = (int(max(math.floor(v) - 1, 0)) for v in pts.min(0))
    x1, y1 = (int(min(math.ceil(v) + 1, size)) for v in pts.max(0))
    ss = _SUPERSAMPLE
    mask = Image.new("L", ((x1 - x0) * ss, (y1 - y0) * ss), 0)
    local = (pts - [x0, y0]) * ss - 0.5  # PIL fills a sub-pixel when its centre is inside the polygon
    ImageDraw.Draw(mask).polygon([tuple(p) for p in local.tolist()], fill=255)
    alpha = np.asarray(mask.reduce(ss), dtype=np.float32) / 255.0
    h, w = alpha.shape
    direction = rng.uniform(-1, 1, 2)
    shade = 1.0 - 0.1 * ((np.arange(w, dtype=np.float32)[None, :] * direction[0]
                          + np.arange(h, dtype=np.float32)[:, None] * direction[1])
                         / max(w, h) * 0.5 + 0.5)
    colour = rgb[:, None, None] * shade[None]
    region = canvas[:, y0:y1, x0:x1]
    region += (colour - region) * alpha[None]
    ys, xs = np.nonzero(alpha)
    bbox = [x0 + int(xs.min()), y0 + int(ys.min()), int(xs.max() - xs.min()) + 1, int(ys.max() - ys.min()) + 1]
    return bbox, round(float(alpha.sum()), 2)


def _render(seed: int, index: int, size: int) -> tuple[Image.Image, list[dict[str, Any]], list[str]]:
    """Draw image ``index`` of dataset ``seed``: the picture, its objects and five captions."""
    rng = np.random.default_rng([seed, index])
    canvas, bg_kind = _background(rng, size)
    placed: list[tuple[float, float, float, float]] = []
    objects: list[dict[str, Any]] = []
    for _ in range(int(rng.integers(1, 4))):
        used = {(o["shape"], o["colour"]) for o in objects}
        shape = _pick(rng, SHAPES)
        colour = _pick(rng, [c for c in COLOURS if (shape, c) not in used])
        size_cls = _pick(rng, SIZES)
        pts = _place(rng, shape, size_cls, size, placed)
        if pts is None and size_cls != "small":
            size_cls = "small"
            pts = _place(rng, shape, size_cls, size, placed)
        if pts is None:
            continue
        rgb = np.array(COLOUR_RGB[colour], dtype=np.float32) + rng.uniform(-10, 10, 3).astype(np.float32)
        bbox, area = _paint(canvas, pts, rgb, rng)
        objects.append({
            "shape": shape, "colour": colour, "size": size_cls, "bbox": bbox, "area": area,
            "segmentation": [[round(v, 2) for v in pts.reshape(-1).tolist()]],
            "cx": bbox[0] + bbox[2] / 2, "cy": bbox[1] + bbox[3] / 2,
        })
    canvas += _noise(rng, size) * np.float32(rng.uniform(2.0, 12.0))
    planes = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    img = Image.merge("RGB", [Image.fromarray(p, mode="L") for p in planes])
    return img, objects, _captions(objects, bg_kind, size, rng)


# ---------------------------------------------------------------- captions


def _article(phrase: str) -> str:
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def _np(o: dict[str, Any], rng: np.random.Generator, size: bool | None = None) -> str:
    """'a small red circle' / 'a red circle'; size word included at random unless ``size`` says."""
    with_size = bool(rng.integers(2)) if size is None else size
    words = ([_pick(rng, _SIZE_WORDS[o["size"]])] if with_size else []) + [o["colour"], o["shape"]]
    return _article(" ".join(words))


def _rel(a: dict[str, Any], b: dict[str, Any], rng: np.random.Generator) -> str:
    """Where ``a`` is relative to ``b``, along the axis on which their centres differ most."""
    dx, dy = a["cx"] - b["cx"], a["cy"] - b["cy"]
    if abs(dx) >= abs(dy):
        side = ("to the left of", "left of") if dx < 0 else ("to the right of", "right of")
        return _pick(rng, side + ("next to", "beside"))
    return _pick(rng, ("above", "over") if dy < 0 else ("below", "under", "beneath"))


def _where(o: dict[str, Any], size: int, rng: np.random.Generator) -> str:
    col = 0 if o["cx"] < size / 3 else 2 if o["cx"] > 2 * size / 3 else 1
    row = 0 if o["cy"] < size / 3 else 2 if o["cy"] > 2 * size / 3 else 1
    vert, horiz = ("top", "", "bottom")[row], ("left", "", "right")[col]
    if vert and horiz:
        return f"in the {vert} {horiz} corner"
    if vert:
        return f"at the {vert}"
    if horiz:
        return f"on the {horiz}"
    return _pick(rng, ("in the middle", "in the centre"))


def _listing(objs: list[dict[str, Any]], rng: np.random.Generator) -> str:
    """'two circles in red and blue and a big green star': same shapes grouped under the plural."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for o in objs:
        groups.setdefault(o["shape"], []).append(o)
    parts = []
    for shape, members in groups.items():
        if len(members) == 1:
            parts.append(_np(members[0], rng))
        else:
            parts.append(f"{_NUMBERS[len(members)]} {shape}s in {' and '.join(m['colour'] for m in members)}")
    return " and ".join(parts)


def _captions(objs: list[dict[str, Any]], bg_kind: str, size: int, rng: np.random.Generator) -> list[str]:
    """Five captions from five different templates; every caption names every object's shape."""
    bg = _article(f"{_pick(rng, _BG_WORDS[bg_kind])} background")
    o = sorted(objs, key=lambda d: (d["cx"], d["cy"]))  # left to right
    tag = [f"{d['colour']} {d['shape']}" for d in o]
    if len(o) == 1:
        a = o[0]
        caps = [
            f"{_np(a, rng, True)} on {bg}",
            f"{_np(a, rng, False)} {_where(a, size, rng)}",
            f"there is a single {_pick(rng, _SIZE_WORDS[a['size']])} {a['shape']} and it is {a['colour']}",
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


# ---------------------------------------------------------------- dataset


def _render_chunk(task: tuple[str, int, int, list[tuple[int, str]]]) -> list[dict[str, Any]]:
    """Worker: render and save a run of images, return their records (kept small for pickling)."""
    root, seed, size, items = task
    records = []
    for index, split in items:
        img, objects, captions = _render(seed, index, size)
        image_id = index + 1
        file_name = f"{split}/{image_id:08d}.jpg"
        img.save(os.path.join(root, "images", file_name), format="JPEG", quality=90)
        records.append({"id": image_id, "file_name": file_name, "split": split, "objects": objects,
                        "captions": captions})
    return records


def _split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Largest-remainder split, then give every split with a positive fraction at least one image."""
    raw = [n * f for f in fractions]
    counts = [int(math.floor(r)) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: (counts[i] - raw[i], i))[: n - sum(counts)]:
        counts[i] += 1
    for i, f in enumerate(fractions):
        donor = max(range(len(counts)), key=lambda j: counts[j])
        if f > 0 and counts[i] == 0 and counts[donor] > 1:
            counts[donor] -= 1
            counts[i] += 1
    return counts


def _check_args(n_images: Any, seed: Any, image_size: Any, fractions: Any, workers: Any) -> None:
    def whole(v: Any) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not whole(n_images) or n_images < 1:
        raise ConfigError(f"synth: number of images must be a whole number >= 1, got {n_images!r}")
    if not whole(seed) or seed < 0:
        raise ConfigError(f"synth: seed must be a whole number >= 0, got {seed!r}")
    if not whole(image_size) or not _MIN_SIZE <= image_size <= _MAX_SIZE:
        raise ConfigError(f"synth: image size must be a whole number of pixels in [{_MIN_SIZE}, {_MAX_SIZE}], "
                          f"got {image_size!r}")
    try:
        fr = [float(f) for f in fractions]
    except (TypeError, ValueError):
        raise ConfigError(f"synth: split fractions must be three numbers (train, val, test), "
                          f"got {fractions!r}") from None
    if len(fr) != 3 or any(not math.isfinite(f) or f < 0 for f in fr) or abs(sum(fr) - 1) > 1e-6 or fr[0] <= 0:
        raise ConfigError(f"synth: split fractions (train, val, test) must be >= 0 with train > 0 and sum to 1, "
                          f"got {fractions!r}")
    if workers is not None and (not whole(workers) or workers < 1):
        raise ConfigError(f"synth: workers must be a whole number >= 1 (or omitted for automatic), got {workers!r}")


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; pick a new output folder for the synthetic dataset")
    if out.is_dir() and any(out.iterdir()):
        raise DataError(f"{out}: output folder exists and is not empty; pick a new folder or remove it first")


def _default_workers(n_images: int) -> int:
    if n_images < 256:  # a pool costs more to start than a few hundred images take to draw
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, 8))


def _coco(split: str, seed: int, images: list[dict[str, Any]], annotations: list[dict[str, Any]],
          categories: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "info": {"description": f"captioner synthetic shapes, {split} split", "version": FORMAT_VERSION,
                 "contributor": "captioner.synth", "seed": seed},
        "licenses": [{"id": 1, "name": "CC0 1.0 (generated data)",
                      "url": "https://creativecommons.org/publicdomain/zero/1.0/"}],
        "images": images,
        "annotations": annotations,
    }
    if categories is not None:
        doc["categories"] = categories
    return doc


def _write_annotations(root: Path, records: list[dict[str, Any]], seed: int, size: int) -> dict[str, int]:
    categories = [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(SHAPES)]
    cat_id = {s: i + 1 for i, s in enumerate(SHAPES)}
    cap_id = inst_id = 0
    counts = {}
    for split in SPLITS:
        recs = [r for r in records if r["split"] == split]
        images = [{"id": r["id"], "file_name": r["file_name"], "width": size, "height": size, "license": 1}
                  for r in recs]
        caps, insts = [], []
        for r in recs:
            for text in r["captions"]:
                cap_id += 1
                caps.append({"id": cap_id, "image_id": r["id"], "caption": text})
            for o in r["objects"]:
                inst_id += 1
                insts.append({"id": inst_id, "image_id": r["id"], "category_id": cat_id[o["shape"]],
                              "bbox": o["bbox"], "area": o["area"], "iscrowd": 0,
                              "segmentation": o["segmentation"],
                              "attributes": {"colour": o["colour"], "size": o["size"]}})
        write_json(root / f"captions_{split}.json", _coco(split, seed, images, caps))
        write_json(root / f"instances_{split}.json", _coco(split, seed, images, insts, categories))
        counts[split] = len(recs)
    return counts


def generate(out_dir: str | os.PathLike, n_images: int, seed: int = 0, image_size: int = 224,
             split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), workers: int | None = None,
             progress: bool = False) -> dict[str, Any]:
    """Write a synthetic COCO-style dataset to ``out_dir`` (which must not exist or be empty).

    Everything is built in a hidden temporary folder beside ``out_dir`` and renamed into place at the
    end, so an interrupted run leaves nothing behind. Returns ``{"images", "splits", "out", ...}``.
    """
    _check_args(n_images, seed, image_size, split_fractions, workers)
    n_images, seed, image_size = int(n_images), int(seed), int(image_size)
    out = Path(out_dir)
    _check_out(out)
    counts = _split_counts(n_images, [float(f) for f in split_fractions])
    split_of = [s for s, c in zip(SPLITS, counts) for _ in range(c)]
    n_workers = _default_workers(n_images) if workers is None else int(workers)
    items = list(enumerate(split_of))
    tmp: Path | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        for split in SPLITS:
            (tmp / "images" / split).mkdir(parents=True)
        tasks = [(str(tmp), seed, image_size, items[i:i + _CHUNK]) for i in range(0, n_images, _CHUNK)]
        records: list[dict[str, Any]] = []

        def collect(batch: list[dict[str, Any]]) -> None:
            records.extend(batch)
            if progress:
                print(f"\rsynth: {len(records)}/{n_images} images", end="", file=sys.stderr, flush=True)

        if n_workers == 1:
            for task in tasks:
                collect(_render_chunk(task))
        else:
            with multiprocessing.get_context().Pool(n_workers) as pool:
                for batch in pool.imap(_render_chunk, tasks):
                    collect(batch)
        if progress:
            print(file=sys.stderr)
        _write_annotations(tmp, records, seed, image_size)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp/mkstemp make things private; a dataset should not be
        for path in tmp.glob("*.json"):
            os.chmod(path, 0o666 & ~umask)
        _check_out(out)  # again: someone may have written there while we were drawing
        if out.is_dir():
            out.rmdir()
        os.rename(tmp, out)
        tmp = None
    except OSError as exc:
        raise DataError(f"{out}: cannot write the synthetic dataset ({exc}); "
                        "check free space and permissions") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"images": n_images, "splits": dict(zip(SPLITS, counts)), "out": str(out), "seed": seed,
            "image_size": image_size, "workers": n_workers}


# ---------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags for ``captioner synth``."""
    parser.add_argument("--out", required=True, help="new (or empty) folder to write the dataset into")
    parser.add_argument("--images", type=int, default=1000, help="number of images (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files (default 0)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per CPU for big runs)")
    parser.add_argument("--splits", default="0.8,0.1,0.1", help="train,val,test fractions (default 0.8,0.1,0.1)")


def run(args: argparse.Namespace) -> int:
    """Run ``captioner synth`` and print a one-line summary."""
    try:
        fractions = tuple(float(f) for f in str(args.splits).split(","))
    except ValueError:
        raise ConfigError(f"synth: --splits must be three comma-separated numbers like 0.8,0.1,0.1, "
                          f"got {args.splits!r}") from None
    start = time.perf_counter()
    summary = generate(args.out, args.images, seed=args.seed, image_size=args.size,
                       split_fractions=fractions, workers=args.workers,  # type: ignore[arg-type]
                       progress=sys.stderr.isatty())
    parts = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
    print(f"synth: wrote {summary['images']} images ({parts}) to {summary['out']} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0
