"""Writing a synthetic COCO-style dataset: splits, worker processes, COCO files, atomic output.

Why: tests, CI and the attention pointing game need a dataset whose objects have known, tight boxes and
whose captions name those objects by their category word, stored in real COCO format so the loaders used
for COCO are the ones exercised here. The whole dataset is built in a hidden folder and renamed into
place, so an interrupted run leaves nothing behind.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...atomic import write_json
from ...errors import ConfigError, DataError
from .render import render
from .styles import DEFAULT_STYLE, STYLES, resolve_styles, style_of_image
from .vocab import SHAPES

SPLITS: tuple[str, ...] = ("train", "val", "test")
FORMAT_VERSION = "1"
_MIN_SIZE, _MAX_SIZE = 64, 2048
_CHUNK = 32  # images per worker task


Task = tuple[str, int, int, tuple[str, ...], list[tuple[int, str]]]  # root, seed, size, styles, (index, split)


def _render_chunk(task: Task) -> list[dict[str, Any]]:
    """Worker: render and save a run of images, return their records (kept small for pickling)."""
    root, seed, size, styles, items = task
    records = []
    for index, split in items:
        style = style_of_image(styles, seed, index)
        img, objects, captions = render(STYLES[style], seed, index, size)
        image_id = index + 1
        file_name = f"{split}/{image_id:08d}.jpg"
        img.save(os.path.join(root, "images", file_name), format="JPEG", quality=90)
        records.append({"id": image_id, "file_name": file_name, "split": split, "objects": objects,
                        "captions": captions, "style": style})
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
          categories: list[dict[str, Any]] | None = None, style: str | None = None) -> dict[str, Any]:
    info = {"description": f"captioner synthetic shapes, {split} split", "version": FORMAT_VERSION,
            "contributor": "captioner.synth", "seed": seed}
    if style is not None:
        info["style"] = style
    doc: dict[str, Any] = {
        "info": info,
        "licenses": [{"id": 1, "name": "CC0 1.0 (generated data)",
                      "url": "https://creativecommons.org/publicdomain/zero/1.0/"}],
        "images": images,
        "annotations": annotations,
    }
    if categories is not None:
        doc["categories"] = categories
    return doc


def _write_annotations(root: Path, records: list[dict[str, Any]], seed: int, size: int,
                       style: str | None) -> dict[str, int]:
    """captions_<split>.json and instances_<split>.json; with ``style`` (any but the default) the info
    block names it and every image entry carries its own style, so a mix can be scored per style."""
    categories = [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(SHAPES)]
    cat_id = {s: i + 1 for i, s in enumerate(SHAPES)}
    cap_id = inst_id = 0
    counts = {}
    for split in SPLITS:
        recs = [r for r in records if r["split"] == split]
        images = [{"id": r["id"], "file_name": r["file_name"], "width": size, "height": size, "license": 1}
                  for r in recs]
        if style is not None:
            for image, r in zip(images, recs):
                image["style"] = r["style"]
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
        write_json(root / f"captions_{split}.json", _coco(split, seed, images, caps, style=style))
        write_json(root / f"instances_{split}.json", _coco(split, seed, images, insts, categories, style))
        counts[split] = len(recs)
    return counts


def _draw(tasks: list[Task], n_workers: int, n_images: int, progress: bool) -> list[dict[str, Any]]:
    """Render every task, in this process or a pool; records in task order either way."""
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
    return records


def _publish(tmp: Path, out: Path) -> None:
    """Give the finished dataset the usual permissions and rename it to ``out``."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp/mkstemp make things private; a dataset should not be
    for path in tmp.glob("*.json"):
        os.chmod(path, 0o666 & ~umask)
    _check_out(out)  # again: someone may have written there while we were drawing
    if out.is_dir():
        out.rmdir()
    os.rename(tmp, out)


def generate(out_dir: str | os.PathLike, n_images: int, seed: int = 0, image_size: int = 224,
             split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), workers: int | None = None,
             progress: bool = False, style: str | Sequence[str] = DEFAULT_STYLE) -> dict[str, Any]:
    """Write a synthetic COCO-style dataset to ``out_dir`` (which must not exist or be empty).

    ``style`` is a name from STYLES, a comma-separated mix ("plain,dark"), a list of names, or "all";
    in a mix each image draws its style from the list, keyed by (seed, index). Everything is built in a
    hidden temporary folder beside ``out_dir`` and renamed into place at the end, so an interrupted run
    leaves nothing behind. Returns ``{"images", "splits", "styles", "out", ...}``.
    """
    _check_args(n_images, seed, image_size, split_fractions, workers)
    styles = resolve_styles(style)
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
        tasks = [(str(tmp), seed, image_size, styles, items[i:i + _CHUNK]) for i in range(0, n_images, _CHUNK)]
        records = _draw(tasks, n_workers, n_images, progress)
        _write_annotations(tmp, records, seed, image_size, None if styles == (DEFAULT_STYLE,) else ",".join(styles))
        _publish(tmp, out)
        tmp = None
    except OSError as exc:
        raise DataError(f"{out}: cannot write the synthetic dataset ({exc}); "
                        "check free space and permissions") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    drawn = {name: sum(r["style"] == name for r in records) for name in dict.fromkeys(styles)}
    return {"images": n_images, "splits": dict(zip(SPLITS, counts)), "styles": drawn, "out": str(out),
            "seed": seed, "image_size": image_size, "workers": n_workers}
