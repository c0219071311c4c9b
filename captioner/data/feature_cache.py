"""A disk cache of what the encoder computes that training never changes: each image is encoded once, ever.

For a frozen encoder that is the annotation grid itself; when the last blocks are fine-tuned, it is the
activations where those blocks begin, so each training step runs only the blocks being trained.
Features live in a memory-mapped fp16 ``.npy`` (half the disk of fp32, no measurable loss) under a
folder named by the encoder's cache key (name, weights, grid, preprocessing, fine-tuned blocks) and by
the list of images. Any change gives a new key, so a stale cache is never read.

An entry is written under a lock (one writer; another process that needs it waits and then reads it),
with its blocks allocated up front, so a full disk is a clear error and never a half-written entry;
the temporary file of a writer that was killed is removed on the next start. Every row carries a CRC-32,
checked each time the entry is opened: a damaged or truncated entry is rebuilt, with a warning, before
training reads any of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import CaptionerError
from .images import load_image
from ..atomic import atomic_path, remove_stale_temps, reserve_space, write_json
from ..digests import damaged_rows, row_checksums
from ..locks import FileLock
from ..progress import progress_bar


class Encoder(Protocol):
    """What the cache needs of an encoder (:class:`captioner.model.encoder.Encoder` is one)."""

    image_size: int

    def cache_key(self) -> str: ...
    def frozen_part(self, images: torch.Tensor) -> torch.Tensor: ...
    def preprocessing(self) -> Callable: ...
    def to(self, device: torch.device | str) -> Encoder: ...
    def eval(self) -> Encoder: ...


def default_cache_dir() -> Path:
    return Path(os.environ.get("CAPTIONER_CACHE", Path.home() / ".cache" / "captioner")) / "features"


class _ImageFiles(Dataset):
    def __init__(self, paths: Sequence[str], preprocess) -> None:
        self.paths, self.preprocess = list(paths), preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return i, self.preprocess(load_image(self.paths[i])), ""
        except CaptionerError as exc:
            return i, None, str(exc)


def _collate(items):
    good = [(i, x) for i, x, _ in items if x is not None]
    bad = [(i, err) for i, x, err in items if x is None]
    idx = torch.tensor([i for i, _ in good], dtype=torch.long)
    batch = torch.stack([x for _, x in good]) if good else None
    return idx, batch, bad


class FeatureStore:
    """Row ``i`` holds :meth:`Encoder.frozen_part` of image ``paths[i]``; ``valid[i]`` is False for unreadable images.

    Rows of a cache file are read with ``pread`` on a descriptor advised ``POSIX_FADV_RANDOM``, not through
    the memory map: a page fault on the map reads the disk's whole read-ahead window around the page (8 MB
    on a virtio disk: some 50 rows for the one wanted), so once the cache outgrows the page cache (COCO:
    18 GB) every random training batch read hundreds of MB, evicted the rows it was about to need, and
    counted each touched page in the process's resident memory. ``pread`` reads the row's bytes only.
    """

    live = False

    def __init__(self, array: np.ndarray, paths: list[str], valid: np.ndarray) -> None:
        self.array, self.paths, self.valid = array, paths, valid
        self.row = {p: i for i, p in enumerate(paths)}
        self._file = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None}  # a descriptor does not travel; the copy opens its own

    def get(self, rows: torch.Tensor | Sequence[int]) -> torch.Tensor:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        fd = self._descriptor()
        if fd is None:
            return torch.from_numpy(np.ascontiguousarray(self.array[rows])).float()
        n = len(self.array)
        if len(rows) and (rows.min() < -n or rows.max() >= n):
            raise IndexError(f"feature rows out of range for a cache of {n} images")
        out = np.empty((len(rows), *self.array.shape[1:]), dtype=self.array.dtype)
        size = out[0].nbytes if len(rows) else 0
        raw = out.reshape(len(rows), size // self.array.itemsize).view(np.uint8)
        for i, r in enumerate(np.where(rows < 0, rows + n, rows).tolist()):
            buf, done = memoryview(raw[i]), 0
            while done < size:
                got = os.preadv(fd, [buf[done:]], self.array.offset + r * size + done)
                if got <= 0:
                    raise CaptionerError(f"{self.array.filename}: the feature cache ends inside row {r}; "
                                         "delete the file to rebuild the cache")
                done += got
        return torch.from_numpy(out).float()

    def _descriptor(self) -> int | None:
        """The cache file opened for reading, when ``array`` is a whole C-ordered memory-mapped file."""
        if self._file is not None:
            return self._file.fileno()
        arr = self.array
        name = getattr(arr, "filename", None)
        if (type(arr) is not np.memmap or name is None or not hasattr(os, "preadv") or not arr.flags.c_contiguous
                or arr.ndim < 1):
            return None
        try:
            if arr.offset + arr.nbytes != os.path.getsize(name):  # a slice of the map, not the file's array
                return None
            self._file = open(name, "rb", buffering=0)
        except OSError:
            return None
        if hasattr(os, "posix_fadvise"):
            try:
                os.posix_fadvise(self._file.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
            except OSError:
                pass
        return self._file.fileno()

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)


def _list_hash(paths: Sequence[str]) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p) if os.path.exists(p) else None
        h.update(f"{os.path.abspath(p)}|{st.st_size if st else -1}|{int(st.st_mtime) if st else -1}\n".encode())
    return h.hexdigest()[:16]


def cache_entry(encoder: Encoder, paths: Sequence[str], cache_dir: str | Path | None = None,
) -> Path:
    """The cache entry of these images: ``STEM.npy`` (features), ``STEM.json`` (index), ``STEM.lock`` (writer)."""
    folder = Path(cache_dir or default_cache_dir()) / encoder.cache_key()
    return folder / f"{_list_hash([str(p) for p in paths])}-fp16"


class DamagedEntry(Exception):
    """A cache entry that is on disk but cannot be trusted: its message says what is wrong with it."""


def _cached(stem: Path, paths: list[str]) -> FeatureStore | None:
    """The entry's store, None when there is none yet; DamagedEntry when its files fail their checks."""
    meta_path, array_path = stem.with_suffix(".json"), stem.with_suffix(".npy")
    if not (meta_path.is_file() and array_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("paths") != paths:
            return None
        arr = np.load(array_path, mmap_mode="r")
        valid = np.asarray(meta["valid"], dtype=bool)
        if arr.shape != tuple(meta["shape"]) or len(valid) != len(paths):
            raise ValueError(f"its array is {arr.shape}, its index says {tuple(meta['shape'])}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DamagedEntry(f"{array_path}: unreadable ({str(exc).splitlines()[0][:120]})") from None
    sums = meta.get("row_crc32")
    if sums is None:
        warnings.warn(f"feature cache {array_path} carries no checksums (an older captioner wrote it), so damage "
                      "to it cannot be detected; delete it to rebuild it with them", stacklevel=3)
    else:
        bad = damaged_rows(arr, sums)
        if bad:
            raise DamagedEntry(f"{array_path}: {len(bad)} row(s) do not match their checksums (first: image "
                               f"{paths[bad[0]]})")
    return FeatureStore(arr, paths, valid)


def _open_or_remove(stem: Path, paths: list[str]) -> FeatureStore | None:
    """:func:`_cached`, with a damaged entry deleted (and a warning) so that it is encoded again."""
    try:
        return _cached(stem, paths)
    except DamagedEntry as exc:
        warnings.warn(f"{exc}; the feature cache entry is damaged and is being rebuilt", stacklevel=3)
        for suffix in (".npy", ".json"):
            stem.with_suffix(suffix).unlink(missing_ok=True)
        return None


def cache_features(encoder: Encoder, paths: Sequence[str], cache_dir: str | Path | None = None, *,
                   batch_size: int = 32, workers: int = 0, progress: bool = True,
                   device: torch.device | str = "cpu") -> FeatureStore:
    """Encode every image once (or reuse the cache) and return the memory-mapped store.

    Unreadable images do not stop the run: they are reported together at the end and marked invalid.
    """
    paths = [str(p) for p in paths]
    stem = cache_entry(encoder, paths, cache_dir)
    remove_stale_temps(stem.parent)
    try:
        store = _cached(stem, paths)
    except DamagedEntry:  # dealt with under the lock: one process rebuilds, the others wait
        store = None
    if store is not None:
        return store
    stem.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(stem.with_suffix(".lock"), "feature cache entry", wait=True):
        # whoever held the lock may just have written (or rebuilt) this very entry
        return _open_or_remove(stem, paths) or _encode_all(encoder, paths, stem, batch_size, workers, progress, device)


def _encode_all(encoder: Encoder, paths: list[str], stem: Path, batch_size: int, workers: int,
                progress: bool, device: torch.device | str) -> FeatureStore:
    meta_path, array_path = stem.with_suffix(".json"), stem.with_suffix(".npy")
    encoder = encoder.to(device).eval()
    side = encoder.image_size
    shape = tuple(encoder.frozen_part(torch.zeros(1, 3, side, side, device=device)).shape[1:])
    valid = np.zeros(len(paths), dtype=bool)
    errors: list[str] = []
    loader = DataLoader(_ImageFiles(paths, encoder.preprocessing()), batch_size=batch_size,
                        num_workers=workers, collate_fn=_collate,
                        generator=torch.Generator())  # own generator: caching must not shift the global RNG
    with atomic_path(array_path) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(paths), *shape))
        reserve_space(tmp)
        with torch.no_grad():
            bar = progress_bar(len(loader), "encoding images", "batch", enabled=progress)
            for idx, batch, bad in loader:
                bar.update(1)
                errors.extend(err for _, err in bad)
                if batch is not None:
                    arr[idx.numpy()] = encoder.frozen_part(batch.to(device)).cpu().numpy()
                    valid[idx.numpy()] = True
            bar.close()
        arr.flush()
        sums = row_checksums(arr)
        del arr
    write_json(meta_path, {"paths": paths, "valid": valid.tolist(), "encoder": encoder.cache_key(),
                           "shape": [len(paths), *shape], "row_crc32": sums})
    if errors:
        warnings.warn(f"{len(errors)} of {len(paths)} images could not be read and are left out "
                      f"(first: {'; '.join(errors[:3])})", stacklevel=3)
    return FeatureStore(np.load(array_path, mmap_mode="r"), paths, valid)


class LiveImages:
    """The FeatureStore interface over image files, with nothing cached (``--no-feature-cache``).

    ``get`` returns preprocessed pixels; the model's forward runs the whole encoder on them, so gradients
    reach any unfrozen blocks.
    """

    live = True

    def __init__(self, paths: Sequence[str], preprocess) -> None:
        self.paths = [str(p) for p in paths]
        self.row = {p: i for i, p in enumerate(self.paths)}
        self.valid = np.ones(len(self.paths), dtype=bool)
        self.preprocess = preprocess

    def get(self, rows: torch.Tensor | Sequence[int]) -> torch.Tensor:
        return torch.stack([self.preprocess(load_image(self.paths[int(r)])) for r in rows])
