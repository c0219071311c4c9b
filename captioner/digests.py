"""Checksums of what captioner writes and reads again: a damaged file is an error, never a wrong caption.

safetensors and ``torch.load`` check a file's structure (header, sizes), not its values: a model with a
few flipped bytes in the middle of a tensor loads without a word and captions nonsense. So models carry
a SHA-256 of their tensor bytes (:mod:`captioner.model.checkpoint`), training states a SHA-256 of their
whole content (:func:`digest`), both written when saved and checked when loaded, and every row of the
feature cache carries a CRC-32 (:func:`row_checksums`: fast enough to check a whole cache each time a run
opens it; SHA-256 here runs at about half the speed).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    """A tensor's raw bytes, whatever its dtype (bf16 has no numpy type: read as bytes)."""
    flat = t.detach().cpu().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


def _update(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        h.update(f"T{obj.dtype}{tuple(obj.shape)}".encode())
        h.update(_tensor_bytes(obj))
    elif isinstance(obj, Mapping):
        h.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=str):
            h.update(f"K{key!r}".encode())
            _update(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for item in obj:
            _update(h, item)
    elif isinstance(obj, (bytes, bytearray)):
        h.update(b"B" + bytes(obj))
    elif obj is None or isinstance(obj, (str, int, float, bool)):
        h.update(f"V{obj!r}".encode())
    else:
        raise TypeError(f"cannot checksum a {type(obj).__name__}")


def digest(obj: Any) -> str:
    """SHA-256 (hex) of tensors, strings and numbers nested in dicts and lists; dict order does not matter."""
    h = hashlib.sha256()
    _update(h, obj)
    return h.hexdigest()


def row_checksums(array: np.ndarray) -> list[int]:
    """CRC-32 of each row (first axis) of an array, e.g. one cached image's features per row."""
    return [zlib.crc32(memoryview(np.ascontiguousarray(row)).cast("B")) for row in array]


def damaged_rows(array: np.ndarray, checksums: list[int], chunk: int = 256) -> list[int]:
    """The rows whose bytes no longer match ``checksums`` (read ``chunk`` rows at a time)."""
    bad = []
    for start in range(0, len(array), chunk):
        for i, crc in enumerate(row_checksums(np.asarray(array[start:start + chunk])), start):
            if crc != checksums[i]:
                bad.append(i)
    return bad
