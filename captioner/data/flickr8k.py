"""Flickr8k's own files -> records: ``Flickr8k.token.txt`` (or the ``captions.txt`` CSV) plus the
``Flickr_8k.{train,dev,test}Images.txt`` split lists."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError, DataError
from .records import Record, finish_records, merge_entries, split_list, read_text

#: Flickr8k's split list files, by the split name used in records ("dev" is called "val" here).
FLICKR8K_SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}


FLICKR8K_CAPTION_FILES = ("Flickr8k.token.txt", "captions.txt")


FLICKR8K_IMAGE_DIRS = ("images", "Flicker8k_Dataset", "Flickr8k_Dataset", "Images")


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

    wanted = split_list(splits)
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
    records = merge_entries(
        (name, str(images_dir / name), split_of[name], [caption])
        for name, caption in _parse_flickr8k_captions(caption_file)
        if name in split_of
    )
    return finish_records(records, caption_file, images_dir, wanted, skip_missing)
