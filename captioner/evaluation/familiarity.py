"""Fitting familiarity: k-means centroids of the training photos' features, calibrated on dev photos.

What familiarity means and how a fitted model scores a photo: :mod:`captioner.model.familiarity`. This
module makes the numbers (centroids, sorted dev distances) from a dataset, writes them into a copy of
a checkpoint, and measures how well they separate unfamiliar photos (ROC AUC).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..model.familiarity import (CENTROIDS_KEY, DEFAULT_CENTROIDS, DEFAULT_POOLING, DEFAULT_THRESHOLD, DEV_KEY,
                                 META_KEY, Familiarity, annotate, attach, pool, unfamiliar_note)


# ------------------------------------------------------------------------------------------ k-means
def kmeans(x: torch.Tensor, k: int, seed: int = 0, iters: int = 50) -> torch.Tensor:
    """k-means++ seeding, then Lloyd steps: deterministic for a seed, float64 sums, no empty clusters.

    An empty cluster is moved to the point farthest from its centroid, so every centroid describes
    some training photos.
    """
    x = x.double()
    n = x.shape[0]
    k = min(k, n)
    gen = torch.Generator().manual_seed(seed)
    centroids = torch.empty(k, x.shape[1], dtype=torch.float64)
    centroids[0] = x[int(torch.randint(n, (1,), generator=gen))]
    d2 = ((x - centroids[0]) ** 2).sum(1)
    for j in range(1, k):
        probs = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full((n,), 1.0 / n, dtype=torch.float64)
        centroids[j] = x[int(torch.multinomial(probs, 1, generator=gen))]
        d2 = torch.minimum(d2, ((x - centroids[j]) ** 2).sum(1))
    assign = None
    for _ in range(iters):
        dist = torch.cdist(x, centroids)
        new = dist.argmin(1)
        if assign is not None and bool((new == assign).all()):
            break
        assign = new
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        empty = (counts == 0).nonzero().flatten().tolist()
        centroids = torch.where(counts.unsqueeze(1) > 0, sums / counts.clamp(min=1).unsqueeze(1), centroids)
        if empty:
            far = dist.gather(1, assign.unsqueeze(1)).squeeze(1).argsort(descending=True)
            for j, i in zip(empty, far.tolist()):
                centroids[j] = x[i]
            assign = None  # the moved centroids change the assignment: keep iterating
    return centroids.float()


def fit(train: torch.Tensor, dev: torch.Tensor, *, k: int = DEFAULT_CENTROIDS, seed: int = 0,
        threshold: float = DEFAULT_THRESHOLD, pooling: str = DEFAULT_POOLING,
        info: dict[str, Any] | None = None) -> Familiarity:
    """Centroids from the training photos' pooled vectors, calibrated on the dev photos' distances."""
    if len(train) < 2:
        raise DataError(f"familiarity needs at least 2 training photos, got {len(train)}")
    if len(dev) < 2:
        raise DataError(f"familiarity needs at least 2 dev photos to calibrate on, got {len(dev)}")
    if not 0 <= threshold <= 1:
        raise ConfigError(f"--threshold must be from 0 to 1, got {threshold}")
    if k < 1:
        raise ConfigError(f"--centroids must be at least 1, got {k}")
    fam = Familiarity(kmeans(train, k, seed), np.zeros(2), threshold, pooling, info)
    fam.dev_distances = np.sort(fam.distances(dev).astype(np.float32)).astype(np.float64)
    return fam


# ------------------------------------------------------------------------------------------ photos
def _cache_rows(encoder: Any, paths: list[str], cache_dir: str | os.PathLike | None) -> dict[str, tuple[Path, int]]:
    """Rows of an existing feature-cache entry of this encoder (``captioner train`` writes them) for ``paths``.

    Only read, never written: an entry counts when its index still matches every image it lists
    (the same size and time stamps as when it was written, checked as the cache itself does), and a row
    only when it still matches its checksum (a damaged row is encoded again instead).
    """
    from ..data.feature_cache import _list_hash, default_cache_dir
    from ..digests import row_checksums

    folder = Path(cache_dir or default_cache_dir()) / encoder.cache_key()
    wanted = {os.path.abspath(p) for p in paths}
    rows: dict[str, tuple[Path, int]] = {}
    for index in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        array = index.with_suffix(".npy")
        try:
            meta = json.loads(index.read_text())
            listed = [str(p) for p in meta["paths"]]
            valid = list(meta["valid"])
            sums = meta.get("row_crc32")
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not array.is_file() or not wanted.intersection(os.path.abspath(p) for p in listed):
            continue
        if index.stem.split("-")[0] != _list_hash(listed):
            continue  # some image changed since: the entry is stale
        found = {os.path.abspath(p): i for i, p in enumerate(listed)
                 if os.path.abspath(p) in wanted and os.path.abspath(p) not in rows and valid[i]}
        if sums is not None and found:
            try:
                arr = np.load(array, mmap_mode="r")
                found = {a: i for a, i in found.items() if row_checksums(arr[i:i + 1])[0] == sums[i]}
            except (OSError, ValueError, IndexError):
                continue
        rows.update({a: (array, i) for a, i in found.items()})
    return rows


def photo_vectors(model: Any, paths: Sequence[str | os.PathLike], *, pooling: str = DEFAULT_POOLING,
                  batch_size: int = 16, cache_dir: str | os.PathLike | None = None,
                  progress: bool = True) -> tuple[torch.Tensor, list[str], list[str]]:
    """Pooled vectors of the photos through the model's own encoder: ``(N x P, used paths, errors)``.

    Photos already in a feature cache of this encoder are read from it (the fine-tuned blocks still run);
    the rest are decoded and encoded here. Unreadable photos are skipped and reported.
    """
    from ..data.images import load_image
    from ..errors import CaptionerError
    from ..progress import progress_bar

    paths = [str(p) for p in paths]
    model.eval()
    enc, fine = model.encoder, model.cfg.fine_dim
    cached = _cache_rows(enc, paths, cache_dir)
    vectors: dict[str, torch.Tensor] = {}
    errors: list[str] = []
    arrays: dict[Path, np.ndarray] = {}
    hits = [p for p in paths if os.path.abspath(p) in cached]
    misses = [p for p in paths if os.path.abspath(p) not in cached]
    bar = progress_bar(len(paths), "familiarity: encoding photos", "photo", enabled=progress)
    with torch.no_grad():
        for start in range(0, len(hits), batch_size):
            chunk = hits[start:start + batch_size]
            groups: dict[Path, list[tuple[str, int]]] = {}
            for p in chunk:
                array, row = cached[os.path.abspath(p)]
                groups.setdefault(array, []).append((p, row))
            for array, items in groups.items():
                arr = arrays.setdefault(array, np.load(array, mmap_mode="r"))
                frozen = torch.from_numpy(np.ascontiguousarray(arr[[r for _, r in items]])).float().to(model.device)
                pooled = pool(enc.trained_part(frozen), fine, pooling).cpu()
                vectors.update({p: v for (p, _), v in zip(items, pooled)})
            bar.update(len(chunk))
        for start in range(0, len(misses), batch_size):
            chunk, images = [], []
            for p in misses[start:start + batch_size]:
                try:
                    images.append(load_image(p))
                    chunk.append(p)
                except CaptionerError as exc:
                    errors.append(str(exc))
            if images:
                pooled = pool(model.features(images), fine, pooling).cpu()
                vectors.update(zip(chunk, pooled))
            bar.update(len(misses[start:start + batch_size]))
    bar.close()
    used = [p for p in paths if p in vectors]
    if not used:
        raise DataError(f"none of the {len(paths)} photos could be read (first: {'; '.join(errors[:2])})")
    if errors:
        warnings.warn(f"{len(errors)} of {len(paths)} photos could not be read and are left out "
                      f"(first: {'; '.join(errors[:3])})", stacklevel=2)
    return torch.stack([vectors[p] for p in used]), used, errors


# ------------------------------------------------------------------------------------------ checkpoints
def save_with_familiarity(src: str | os.PathLike, dst: str | os.PathLike, fam: Familiarity) -> Path:
    """Copy checkpoint ``src`` to ``dst`` with ``fam`` in it (replacing any earlier one), atomically.

    Every other tensor keeps its stored dtype (a shipped fp16 model stays fp16 and the same size, plus
    the familiarity tensors in float32); the metadata is kept as it was, plus ``extra["familiarity"]``.
    """
    from safetensors import safe_open

    from ..model.checkpoint import read_checkpoint, write_safetensors
    from ..model.registry import resolve_model_path

    src_path = resolve_model_path(str(src))
    tensors, _, _, extra = read_checkpoint(src_path)  # validates the file first
    with safe_open(str(src_path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        raw = {k: f.get_tensor(k) for k in f.keys() if k not in (CENTROIDS_KEY, DEV_KEY)}
    raw.update(fam.tensors())
    extra = {**extra, META_KEY: fam.metadata()}
    meta["extra"] = json.dumps(extra)
    write_safetensors(dst, raw, meta)
    return Path(dst)


# ------------------------------------------------------------------------------------------ evaluation
def roc_auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """P(a random positive scores above a random negative), ties counting half (Mann-Whitney U)."""
    pos, neg = np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    if not len(pos) or not len(neg):
        raise DataError("ROC AUC needs at least one photo of each kind")
    both = np.concatenate([pos, neg])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(len(both))
    sorted_vals = both[order]
    i = 0
    while i < len(both):  # average ranks over ties
        j = i
        while j + 1 < len(both) and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def fingerprint(paths: Sequence[str]) -> str:
    """A short hash of a photo list, stored with the fit so a reader can tell two fits apart."""
    return hashlib.sha256("\n".join(os.path.basename(p) for p in paths).encode()).hexdigest()[:12]


__all__ = ["Familiarity", "pool", "fit", "kmeans", "roc_auc", "photo_vectors", "save_with_familiarity",
           "attach", "annotate", "unfamiliar_note", "DEFAULT_THRESHOLD"]
