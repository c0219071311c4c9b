"""Training data: the configured records, captions grouped by image, the batches of an epoch, one batch's inputs.

Batches are made of *images*, each with all of its captions, so an image's grid is read and projected
once per batch however many captions it has; the order of an epoch is a function of (seed, epoch), which
is what lets an interrupted run resume on exactly the batches it would have seen.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import torch

from typing import TYPE_CHECKING

from ..data.feature_cache import FeatureStore
from ..data.formats import load_records
from ..data.records import Record
from ..data.vocab import Vocab
from ..errors import ConfigError, DataError
from .config import TrainConfig

if TYPE_CHECKING:
    from .boxes import BoxTargets


@dataclass
class Pairs:
    """Training captions grouped by image: image k owns captions starts[k]:starts[k+1]."""

    image_rows: torch.Tensor  # M feature-store rows, one per image
    starts: torch.Tensor  # M + 1 offsets into the caption arrays
    tokens: torch.Tensor  # N x T, padded
    lengths: torch.Tensor  # N, tokens incl. <start>/<end>
    references: list[list[str]] = field(default_factory=list)  # M: each image's raw captions (SCST rewards)
    records: list[Record] = field(default_factory=list)  # M: the records the images come from
    boxes: "BoxTargets | None" = None  # box supervision targets of the M images (--instances)

    @property
    def n_images(self) -> int:
        return len(self.image_rows)


def make_pairs(records: list[Record], store: FeatureStore, vocab: Vocab, max_len: int) -> Pairs:
    """Encode the captions of every readable image, each at most ``max_len`` words."""
    rows, starts, seqs, refs, kept = [], [0], [], [], []
    for r in records:
        row = store.row[r.image_path]
        if not store.valid[row] or not r.captions:
            continue
        rows.append(row)
        refs.append(list(r.captions))
        kept.append(r)
        seqs.extend(vocab.encode(cap, max_len=max_len) for cap in r.captions)
        starts.append(len(seqs))
    if not seqs:
        raise DataError("no usable training captions (every image failed to load, or none has captions)")
    # one vectorised fill, not a tensor per caption: at COCO's 566k captions the per-caption loop took longer
    # than tokenising them
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
    flat = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64, count=int(lengths.sum()))
    tokens = np.full((len(seqs), int(lengths.max())), vocab.pad_id, dtype=np.int64)
    tokens[np.arange(tokens.shape[1]) < lengths[:, None]] = flat  # row-major: each row's words in order
    return Pairs(torch.tensor(rows, dtype=torch.long), torch.tensor(starts, dtype=torch.long),
                 torch.from_numpy(tokens), torch.from_numpy(lengths), refs, kept)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[torch.Tensor]:
    """The image batches of one epoch: a permutation fixed by (seed, epoch), so a resumed run sees the same ones.

    Each global batch holds batch_size * world images; rank r takes every world-th of them.
    """
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=gen)
    size = batch_size * world
    return [perm[i : i + size][rank::world] for i in range(0, n - size + 1, size)]


def caption_tensors(pairs: Pairs, images: torch.Tensor,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All captions of the batch's images, longest first: tokens, lengths, and which image each belongs to."""
    spans = [torch.arange(int(pairs.starts[k]), int(pairs.starts[k + 1])) for k in images.tolist()]
    caps = torch.cat(spans)
    image_index = torch.cat([torch.full((len(sp),), j, dtype=torch.long) for j, sp in enumerate(spans)])
    lengths = pairs.lengths[caps]
    order = lengths.argsort(descending=True, stable=True)
    caps, lengths, image_index = caps[order], lengths[order], image_index[order]
    tokens = pairs.tokens[caps, : int(lengths.max())].to(device)
    return tokens, lengths.to(device), image_index.to(device)


def image_tensors(pairs: Pairs, images: torch.Tensor, store: FeatureStore, device: torch.device) -> torch.Tensor:
    """The stored features of the batch's images, once each."""
    return store.get(pairs.image_rows[images]).to(device, non_blocking=True)


def prepare_data(cfg: TrainConfig) -> tuple[list[Record], list[Record]]:
    """Training and validation records for the configured format."""
    if not cfg.data:
        raise ConfigError("no training data given; pass --data FILE_OR_FOLDER (and --format)")
    train = load_records(cfg.data_format, cfg.data, cfg.images, split=cfg.train_split, skip_missing=cfg.skip_missing)
    if cfg.data_format == "coco":
        if not cfg.val_data:
            raise ConfigError("COCO format needs --val-data captions_val.json for validation")
        val = load_records("coco", cfg.val_data, cfg.val_images or cfg.images, split=cfg.val_split,
                           skip_missing=cfg.skip_missing)
    else:
        val = load_records(cfg.data_format, cfg.data, cfg.val_images or cfg.images, split=cfg.val_split,
                           skip_missing=cfg.skip_missing)
    return train, val
