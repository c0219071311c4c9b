"""Familiarity: how close a photo's encoder features lie to those of the photos the model was trained on.

A caption model trained on Flickr8k captions a cat "a small dog is in the snow" with the same
confidence as a photo like its training data: the caption's log-probability says how sure the decoder
is of its words, not whether the photo is anything like what it learnt from. Familiarity answers the
second question from the encoder features the decoder sees, computed through the model's own encoder
(a fine-tuned model's features differ from the pretrained backbone's):

1. each photo is pooled to one unit vector (:func:`pool`): the mean over the grid cells of the head
   channels of the annotations (a fused grid's are first un-shuffled back to the full head), the most
   semantic part of what the decoder sees;
2. k-means (seeded, deterministic) over the training photos gives a few hundred centroids; a photo's
   distance is the distance to its nearest centroid;
3. calibrated on the dev photos: familiarity = the fraction of dev photos whose distance is at least
   this photo's (an interpolated empirical survival function). It lies in [0, 1], falls as the distance
   grows, and is about uniform on photos like the training data, so a threshold of 0.05 flags about 5%
   of in-domain photos and, on the shipped Flickr8k models, most photos unlike them.

Centroids and sorted dev distances are tensors in the model's ``.safetensors`` checkpoint, the
threshold and the pooling are JSON metadata (``extra["familiarity"]``): loading never runs code, and a
checkpoint without them loads as before, with ``familiarity`` None on every result.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CheckpointError, ConfigError

CENTROIDS_KEY = "familiarity.centroids"
DEV_KEY = "familiarity.dev_distances"
META_KEY = "familiarity"
DEFAULT_THRESHOLD = 0.05
DEFAULT_CENTROIDS = 256
POOLINGS = ("head", "parts", "mean")
DEFAULT_POOLING = "head"
FORMAT_VERSION = 1


# ------------------------------------------------------------------------------------------ features
def pool(feats: torch.Tensor, fine_dim: int = 0, pooling: str = DEFAULT_POOLING) -> torch.Tensor:
    """B x L x D annotations -> B x P unit vectors, one per photo.

    ``head`` (the default): on a fused grid (``fine_dim`` > 0), the mean of its head channels after
    un-shuffling them back to the full head, i.e. the backbone's global embedding as the model's own
    (possibly fine-tuned) blocks compute it; averaged in the pixel-shuffled form, each channel would blend
    four head channels. It separates photos unlike the training ones best (BENCHMARKS.md: ROC AUC 0.99+
    vs 0.98 for the plain mean). ``parts``: the stride-16 channels' mean and the head's, each
    L2-normalised and scaled by 1/sqrt(2), so both weigh the same. ``mean``: the mean annotation. A grid
    without a fine part (``head`` or ``stage16`` features) always uses the mean annotation.
    """
    if pooling not in POOLINGS:
        raise ConfigError(f"unknown familiarity pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    feats = feats.float()
    if pooling == "mean" or fine_dim <= 0 or fine_dim >= feats.shape[2]:
        return F.normalize(feats.mean(1), dim=1)
    B, L, _ = feats.shape
    side = math.isqrt(L)
    head = feats[:, :, fine_dim:].transpose(1, 2).reshape(B, -1, side, side)
    if side % 2 == 0:
        head = F.pixel_unshuffle(head, 2)
    head = F.normalize(head.mean((2, 3)), dim=1)
    if pooling == "head":
        return head
    fine = F.normalize(feats[:, :, :fine_dim].mean(1), dim=1)
    return torch.cat([fine, head], 1) / math.sqrt(2.0)


def pooled_dim(feature_dim: int, fine_dim: int, grid: int, pooling: str) -> int:
    """Length of :func:`pool`'s vectors for a model config."""
    if pooling == "mean" or fine_dim <= 0 or fine_dim >= feature_dim:
        return feature_dim
    head = (feature_dim - fine_dim) * (4 if grid % 2 == 0 else 1)
    return head if pooling == "head" else fine_dim + head


# ------------------------------------------------------------------------------------------ the score
@dataclass
class Familiarity:
    """Centroids of the training photos' pooled features and the dev photos' sorted distances to them."""

    centroids: torch.Tensor  # K x P, float32
    dev_distances: np.ndarray  # N, sorted ascending, float64
    threshold: float = DEFAULT_THRESHOLD
    pooling: str = DEFAULT_POOLING
    info: dict[str, Any] | None = None  # what it was fitted on (counts, seed), for people reading the file

    def distances(self, pooled: torch.Tensor) -> np.ndarray:
        """Euclidean distance of each pooled vector to its nearest centroid."""
        c = self.centroids.to(pooled.device, torch.float32)
        return torch.cdist(pooled.float(), c).min(1).values.cpu().double().numpy()

    def score_distances(self, distances: np.ndarray | Sequence[float]) -> np.ndarray:
        """Fraction of dev photos at least this far away, interpolated between the dev distances.

        1 at or below the smallest dev distance, 0 beyond the largest; monotone non-increasing, so a
        farther photo never looks more familiar. Tied dev distances count once, with all their photos.
        """
        d = np.asarray(distances, dtype=np.float64)
        dev = self.dev_distances
        n = len(dev)
        values, first = np.unique(dev, return_index=True)
        survival = (n - first) / n  # share of dev photos with distance >= each distinct value
        out = np.interp(d, values, survival, left=1.0, right=0.0)
        out = np.where(d == values[-1], survival[-1], out)  # np.interp's right= applies only strictly past it
        return np.clip(out, 0.0, 1.0)

    def score(self, feats: torch.Tensor, fine_dim: int = 0) -> list[float]:
        """Familiarity of each photo from its B x L x D annotations."""
        return [float(x) for x in self.score_distances(self.distances(pool(feats, fine_dim, self.pooling)))]

    # -------------------------------------------------------------------------------- checkpoint
    def tensors(self) -> dict[str, torch.Tensor]:
        """What goes into the checkpoint's tensors (float32: fp16 would blur the calibration)."""
        return {CENTROIDS_KEY: self.centroids.detach().cpu().float().contiguous(),
                DEV_KEY: torch.from_numpy(np.ascontiguousarray(self.dev_distances, dtype=np.float32))}

    def metadata(self) -> dict[str, Any]:
        """What goes into the checkpoint's ``extra["familiarity"]``."""
        return {"version": FORMAT_VERSION, "threshold": self.threshold, "pooling": self.pooling,
                "centroids": int(self.centroids.shape[0]), "dev_photos": len(self.dev_distances),
                **({"fitted_on": self.info} if self.info else {})}

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                        extra: dict[str, Any], pooled_size: int | None = None) -> Familiarity | None:
        """The familiarity stored in a checkpoint, None when it has none; a malformed one is a CheckpointError."""
        meta = extra.get(META_KEY)
        has = CENTROIDS_KEY in tensors or DEV_KEY in tensors
        if meta is None and not has:
            return None
        bad = f"{path}: checkpoint familiarity data is corrupt"
        if not isinstance(meta, dict) or CENTROIDS_KEY not in tensors or DEV_KEY not in tensors:
            raise CheckpointError(f"{bad} (needs the tensors {CENTROIDS_KEY}, {DEV_KEY} and metadata "
                                  f"'{META_KEY}'); refit it with `captioner familiarity fit`")
        if meta.get("version") != FORMAT_VERSION:
            raise CheckpointError(f"{path}: familiarity format version {meta.get('version')!r} is not supported "
                                  f"(this captioner reads version {FORMAT_VERSION}); upgrade captioner or refit it")
        threshold, pooling = meta.get("threshold"), meta.get("pooling")
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 <= threshold <= 1:
            raise CheckpointError(f"{bad}: threshold {threshold!r} is not a number from 0 to 1")
        if pooling not in POOLINGS:
            raise CheckpointError(f"{bad}: unknown pooling {pooling!r}")
        centroids = tensors[CENTROIDS_KEY].float()
        dev = tensors[DEV_KEY].double().numpy()
        if centroids.ndim != 2 or centroids.shape[0] < 1 or (pooled_size and centroids.shape[1] != pooled_size):
            raise CheckpointError(f"{bad}: centroids have shape {tuple(centroids.shape)}, expected K x "
                                  f"{pooled_size or 'P'}")
        if dev.ndim != 1 or len(dev) < 2 or bool(np.any(np.diff(dev) < 0)) or bool(np.any(dev < 0)):
            raise CheckpointError(f"{bad}: dev distances must be a sorted list of at least 2 distances")
        info = meta.get("fitted_on") if isinstance(meta.get("fitted_on"), dict) else None
        return cls(centroids, dev, float(threshold), str(pooling), info)


def attach(model: Any, path: str | os.PathLike, tensors: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
    """Set ``model.familiarity`` from its checkpoint (None when the checkpoint has none)."""
    cfg, meta = model.cfg, extra.get(META_KEY)
    pooling = meta.get("pooling") if isinstance(meta, dict) else None
    size = pooled_dim(cfg.feature_dim, cfg.fine_dim, cfg.grid, pooling) if pooling in POOLINGS else None
    model.familiarity = Familiarity.from_checkpoint(path, tensors, extra, pooled_size=size)


def annotate(model: Any, feats: torch.Tensor, results: list) -> list:
    """Put each photo's familiarity on its caption result (left None when the model has none)."""
    fam: Familiarity | None = getattr(model, "familiarity", None)
    if fam is not None:
        for res, value in zip(results, fam.score(feats, model.cfg.fine_dim)):
            res.familiarity = value
    return results


def unfamiliar_note(image: str, familiarity: float | None, threshold: float) -> str | None:
    """The one-line stderr note of ``captioner caption`` for a photo below the threshold, else None."""
    if familiarity is None or familiarity >= threshold:
        return None
    return (f"captioner: note: {image} looks unlike the training photos (familiarity {familiarity:.2f}); "
            "the caption may be wrong")


def familiarity_text(familiarity: float, threshold: float = DEFAULT_THRESHOLD) -> str:
    """How the HTML report shows the score beside the caption (the page's famLine() writes the same).

    A report has only the ``--json`` entries, not the model, so it warns below the default threshold.
    """
    text = f"familiarity {familiarity:.2f}"
    return text + " (unlike the training photos: the caption may be wrong)" if familiarity < threshold else text


def print_unfamiliar_note(image: str, result: Any, model: Any) -> None:
    """Print :func:`unfamiliar_note` on stderr (out of a progress bar's way) when the photo is below the threshold.

    stderr, not stdout: the caption lines and ``--json`` on stdout stay what scripts parse.
    """
    fam: Familiarity | None = getattr(model, "familiarity", None)
    note = unfamiliar_note(image, getattr(result, "familiarity", None), fam.threshold) if fam else None
    if note:
        from tqdm import tqdm

        with tqdm.external_write_mode(file=sys.stderr):
            print(note, file=sys.stderr, flush=True)
