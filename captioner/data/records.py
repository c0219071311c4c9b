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

import csv
import io
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import ConfigError, DataError

FORMATS = ("coco", "karpathy", "flickr8k")
#: Flickr8k's split list files, by the split name used in records ("dev" is called "val" here).
FLICKR8K_SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
FLICKR8K_CAPTION_FILES = ("Flickr8k.token.txt", "captions.txt")
FLICKR8K_IMAGE_DIRS = ("images", "Flicker8k_Dataset", "Flickr8k_Dataset", "Images")
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
def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a file")


def read_text(path: str | os.PathLike) -> str:
    """Whole file as text (UTF-8, BOM tolerated), or a one-line DataError naming the file."""
    p = Path(path)
    _check_file(p)
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


def _canon_split(name: str) -> str:
    name = name.strip().lower()
    return _SPLIT_ALIASES.get(name, name)


def _split_list(split: str | Sequence[str] | None) -> list[str] | None:
    """None, ``"train"``, ``"train,restval"`` or ``["train", "restval"]`` -> canonical names (or None)."""
    if split is None:
        return None
    parts = split.split(",") if isinstance(split, str) else list(split)
    names = [_canon_split(s) for s in parts if s.strip()]
    return names or None


def _split_label(splits: Sequence[str] | None) -> str:
    return "any split" if not splits else "split " + ", ".join(repr(s) for s in splits)


def _guess_images_dir(source: Path, candidates: Iterable[Path], probe: str | None) -> Path:
    """The first candidate folder holding ``probe`` (the first image the file lists)."""
    candidates = list(dict.fromkeys(candidates))
    for folder in candidates:
        if probe is not None and (folder / probe).is_file():
            return folder
    if probe is None:  # nothing listed; the caller reports the empty split
        return candidates[0]
    looked = ", ".join(str(c) for c in candidates)
    raise DataError(f"{source}: cannot find the images it lists (looked for {probe} in {looked}); pass --images DIR")


def _merge(entries: Iterable[tuple[str, str, str, list[str]]]) -> list[Record]:
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


def _finish(
    records: list[Record], source: Path, images_dir: Path, splits: Sequence[str] | None, skip_missing: bool
) -> list[Record]:
    """Refuse an empty result, then check that the image files exist."""
    if not records:
        raise DataError(f"no images in {_split_label(splits)} of {source}")
    kept = check_images_exist(records, skip_missing, source=source, images_dir=images_dir)
    if not kept:
        raise DataError(f"no images in {_split_label(splits)} of {source}: all {len(records)} are missing from {images_dir}")
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


# ------------------------------------------------------------------------------------ COCO
def _coco_split_from_name(path: Path) -> str | None:
    """``captions_val2014.json`` -> ``"val"``; None when the name does not say."""
    m = re.match(r"captions_([a-z]+)", path.stem.lower())
    return _canon_split(m.group(1)) if m else None


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

    split = _canon_split(split)
    if images_dir is None:
        first = next((names[i] for i in names if i in captions), None)
        stem = source.stem.lower().removeprefix("captions_")
        folder = source.parent
        images_dir = _guess_images_dir(
            source,
            [folder / "images", folder / "images" / split, folder.parent / stem, folder / stem, folder],
            first,
        )
    images_dir = Path(images_dir)
    records = _merge(
        (image_id, str(images_dir / names[image_id]), split, caps) for image_id, caps in captions.items()
    )
    return _finish(records, source, images_dir, [split], skip_missing)


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
    wanted = _split_list(splits)
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
        split = _canon_split(split)
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
        images_dir = _guess_images_dir(
            source, [source.parent / "images", source.parent, source.parent.parent], first
        )
    images_dir = Path(images_dir)
    records = _merge((i, str(images_dir / rel), s, caps) for i, rel, s, caps in entries)
    if not records and wanted and present:
        raise DataError(
            f"no images in {_split_label(wanted)} of {source} (its splits: {', '.join(sorted(present))})"
        )
    return _finish(records, source, images_dir, wanted, skip_missing)


# ------------------------------------------------------------------------------------ Flickr8k
def _find_first(folders: Sequence[Path], names: Sequence[str]) -> Path | None:
    for name in names:
        for folder in folders:
            if (folder / name).is_file():
                return folder / name
    return None


def _parse_flickr8k_captions(path: Path) -> list[tuple[str, str]]:
    """(image name, caption) pairs in file order from a token file or a captions.txt CSV."""
    text = read_text(path)
    first = text.lstrip().split("\n", 1)[0].strip().lower().replace(" ", "")
    pairs: list[tuple[str, str]] = []
    if first.startswith("image,caption"):
        reader = csv.reader(io.StringIO(text.lstrip(), newline=""))
        next(reader)  # header
        try:
            for row in reader:
                if not any(field.strip() for field in row):
                    continue
                if len(row) < 2:
                    raise DataError(f"{path} line {reader.line_num}: expected 'image,caption'")
                # An unquoted caption with commas splits into extra fields: join them back.
                pairs.append((row[0].strip(), ",".join(row[1:]).strip()))
        except csv.Error as e:
            raise DataError(f"{path} line {reader.line_num}: not valid CSV ({e})") from None
    elif "\t" in first or first.endswith(".jpg") or "#" in first:
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            key, tab, caption = line.partition("\t")
            if not tab:
                raise DataError(f"{path} line {lineno}: expected 'NAME.jpg#K<TAB>caption'")
            pairs.append((key.rsplit("#", 1)[0].strip() if "#" in key else key.strip(), caption.strip()))
    else:
        raise DataError(
            f"{path}: not a Flickr8k caption file: expected 'NAME.jpg#K<TAB>caption' lines "
            "or an 'image,caption' CSV"
        )
    return [(name, caption) for name, caption in pairs if caption]


def _read_name_list(path: Path) -> list[str]:
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


def load_flickr8k(
    root_or_file: str | os.PathLike,
    images_dir: str | os.PathLike | None = None,
    splits: str | Sequence[str] | None = None,
    skip_missing: bool = False,
) -> list[Record]:
    """Records from Flickr8k's own files: ``Flickr8k.token.txt`` or ``captions.txt`` + split lists.

    ``root_or_file`` is the dataset folder (the caption file is found in it or in ``Flickr8k_text/``;
    ``Flickr8k.token.txt`` is preferred over ``captions.txt``) or the caption file itself. The split of
    an image is the list it appears in (train, val from ``devImages``, test); images in no list are left
    out. ``splits`` None means every split whose list file is present. Images default to the first of
    ``images/``, ``Flicker8k_Dataset/``, ``Flickr8k_Dataset/``, ``Images/`` in the dataset folder.
    """
    given = Path(root_or_file)
    if not given.exists():
        raise DataError(f"{given}: no such file")
    if given.is_dir():
        root = given
        caption_file = _find_first([root, root / "Flickr8k_text"], FLICKR8K_CAPTION_FILES)
        if caption_file is None:
            raise DataError(
                f"{root}: no Flickr8k caption file found (looked for {' or '.join(FLICKR8K_CAPTION_FILES)})"
            )
    else:
        caption_file, root = given, given.parent
    list_dirs = list(dict.fromkeys([caption_file.parent, root]))

    wanted = _split_list(splits)
    if wanted is not None:
        unknown = [s for s in wanted if s not in FLICKR8K_SPLIT_FILES]
        if unknown:
            raise ConfigError(f"unknown Flickr8k split {unknown[0]!r}; choose from train, val, test")
    list_files = {s: _find_first(list_dirs, [n]) for s, n in FLICKR8K_SPLIT_FILES.items()}
    if wanted is None:
        wanted = [s for s, f in list_files.items() if f is not None]
        if not wanted:
            raise DataError(
                f"{caption_file.parent}: no Flickr8k split lists found beside {caption_file.name} "
                f"(looked for {', '.join(FLICKR8K_SPLIT_FILES.values())}; they come with Flickr8k_text.zip)"
            )
    split_of: dict[str, str] = {}
    for split in wanted:
        list_file = list_files[split]
        if list_file is None:
            raise DataError(f"{caption_file.parent / FLICKR8K_SPLIT_FILES[split]}: no such file (needed for split {split!r})")
        for name in _read_name_list(list_file):
            if split_of.setdefault(name, split) != split:
                raise DataError(f"{list_file}: {name} is also in the {split_of[name]!r} list; an image belongs to one split")

    if images_dir is None:
        found = next((root / d for d in FLICKR8K_IMAGE_DIRS if (root / d).is_dir()), None)
        if found is None:
            raise DataError(
                f"{root}: no image folder found (looked for {', '.join(d + '/' for d in FLICKR8K_IMAGE_DIRS)}); "
                "pass --images DIR"
            )
        images_dir = found
    images_dir = Path(images_dir)
    records = _merge(
        (name, str(images_dir / name), split_of[name], [caption])
        for name, caption in _parse_flickr8k_captions(caption_file)
        if name in split_of
    )
    return _finish(records, caption_file, images_dir, wanted, skip_missing)


# ------------------------------------------------------------------------------------ dispatch
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
    if kind not in FORMATS:
        raise ConfigError(f"unknown dataset format {fmt!r}; choose from {', '.join(FORMATS)}")
    splits = _split_list(split)
    if kind == "coco":
        if splits is None:
            guessed = _coco_split_from_name(Path(path))
            if guessed is None:
                raise ConfigError(f"cannot tell which split {path} holds from its name; pass --split")
            splits = [guessed]
        if len(splits) != 1:
            raise ConfigError(f"a COCO captions file holds one split, got {', '.join(splits)}; load each file separately")
        return load_coco(path, images_dir, splits[0], skip_missing=skip_missing)
    if kind == "karpathy":
        return load_karpathy(path, images_dir, splits, skip_missing=skip_missing)
    return load_flickr8k(path, images_dir, splits, skip_missing=skip_missing)
