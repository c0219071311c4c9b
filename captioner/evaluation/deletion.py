"""A deletion test of attention: does blanking where a word looked make that word less likely?

A heatmap claims "this word came from here". On photos without boxes we can still check the claim:
for each content word of a generated caption, blank the image region under the word's k most attended
grid cells, re-encode the image and re-score the same word teacher-forced on the same prefix,
p(y_t | y_<t, blanked image). If the attention is faithful the probability drops more than when k
random cells, or the k least attended cells, are blanked instead. The ratio attended/random is the
headline: 1 means the map is no better than chance at saying where the evidence is.

Blanking fills with the dataset mean, which is 0 in the encoder's normalised input space (the
preprocessing normalises with the ImageNet mean/std), so a blanked region carries no signal rather than
a black one. Cell (r, c) of a g x g grid covers rows [round(r·S/g), round((r+1)·S/g)) and the same for
columns, so the cells tile the input exactly.

The model is reached through two calls, :class:`Scorer` (``encode`` and ``word_probs``), so the test
can be run on a hand-built fake whose true evidence is known; :class:`ModelScorer` adapts a
:class:`~captioner.model.CaptionModel` using only its public calls (``model.encoder(x)`` and the
teacher-forced ``model.decoder(feats, captions, lengths)``).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np
import torch

from ..model.results import CaptionResult
from ..model.search import DecodeOptions, decode
from ..errors import ConfigError

#: Function words a caption needs but a picture does not show: left out of the deletion test.
STOP_WORDS: frozenset[str] = frozenset("""
a an the of in on at to with and or but is are was were be been being am has have had do does
it its this that these those there here their his her he she they them him we you i my your our
some any for by from as into onto up down out over under off while who whom which what where when
very other another each also than then so not no
""".split())

VARIANTS = ("attended", "random", "least")


@dataclass(frozen=True)
class FaithfulnessOptions:
    """How :func:`deletion_test` is run from ``captioner evaluate``."""

    images: int = 200  # captioned images examined (each content word costs three re-encodes)
    cells: int | None = None  # k cells blanked per word; None: :func:`default_cells`
    seed: int = 0  # the random-cells baseline


class Scorer(Protocol):
    """The two model calls the deletion test needs (a fake with known evidence can stand in)."""

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """B x 3 x S x S preprocessed pixels -> per-image features (whatever ``word_probs`` reads)."""
        ...

    def word_probs(self, feats: torch.Tensor, tokens: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Per caption ``b`` (word ids, no specials), at least ``len(tokens[b])`` values: value t is
        p(tokens[b][t] | tokens[b][:t], image b), teacher-forced."""
        ...


# --------------------------------------------------------------------------------------- helpers
def is_content_word(word: str) -> bool:
    """Words that name something visible: not a stop word, not punctuation, not a special token."""
    return word.lower() not in STOP_WORDS and any(ch.isalnum() for ch in word) and not word.startswith("<")


def default_cells(n_cells: int) -> int:
    """About 10% of the cells, at least one: small enough to stay local, large enough to matter."""
    return max(1, round(0.1 * n_cells))


def check_cells(k: int, n_cells: int) -> int:
    """``k`` itself when 1 <= k <= L; anything else is a ConfigError naming --deletion-cells."""
    if not 1 <= k <= n_cells:
        raise ConfigError(f"--deletion-cells must be between 1 and the {n_cells} attention cells, got {k}")
    return k


def _edges(size: int, grid: int) -> list[int]:
    """Integer cell boundaries round(i·size/grid), i = 0..grid (halves round up, exact integer maths)."""
    return [(2 * i * size + grid) // (2 * grid) for i in range(grid + 1)]


def blank_cells(images: torch.Tensor, cells: Sequence[Sequence[int]], grid: int) -> torch.Tensor:
    """A copy of the B x C x H x W ``images`` with ``cells[b]`` (row-major cell ids of a grid x grid
    grid) of image b set to 0, the dataset mean in the normalised input space.

    The originals are left untouched: the same image is blanked three ways.
    """
    if images.dim() != 4 or len(cells) != images.shape[0]:
        raise ValueError(f"expected B x C x H x W images and B cell lists, got {tuple(images.shape)} "
                         f"and {len(cells)} lists")
    out = images.clone()
    rows, cols = _edges(images.shape[2], grid), _edges(images.shape[3], grid)
    for b, chosen in enumerate(cells):
        for cell in chosen:
            r, c = divmod(int(cell), grid)
            if not 0 <= r < grid:
                raise ValueError(f"cell {cell} is outside a {grid} x {grid} grid")
            out[b, :, rows[r]:rows[r + 1], cols[c]:cols[c + 1]] = 0
    return out


@contextlib.contextmanager
def _eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout, fixed hard-attention choice) without gradients, restored afterwards."""
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was)


def word_probabilities(model: Any, feats: torch.Tensor, tokens: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """Teacher-forced p(word | prefix, image) of every word of every caption, then of its <end>.

    ``feats`` is B x L x D (one row per caption), ``tokens[b]`` caption b's word ids without specials.
    The decoder wants captions sorted longest first and returns logits flattened step-major (at step t
    the first b_t captions still running); this sorts, unflattens and restores the caller's order,
    and checks the decoder's own ``targets`` against the layout so a change there fails loudly.
    """
    vocab = model.vocab
    seqs = [[vocab.start_id, *map(int, t), vocab.end_id] for t in tokens]
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))  # stable: ties keep the caller's order
    if not order:
        return []
    T = len(seqs[order[0]])
    captions = torch.full((len(seqs), T), vocab.pad_id, dtype=torch.long)
    for row, i in enumerate(order):
        captions[row, : len(seqs[i])] = torch.tensor(seqs[i])
    lengths = torch.tensor([len(seqs[i]) for i in order])
    device = feats.device
    index = torch.tensor(order, device=device)
    with _eval_mode(model.decoder):
        out = model.decoder(feats.index_select(0, index), captions.to(device), lengths.to(device))
        probs = torch.softmax(out.logits.float(), dim=1).gather(1, out.targets.unsqueeze(1)).squeeze(1)
    probs, targets, expected = probs.cpu().numpy(), out.targets.cpu().numpy(), captions.numpy()
    steps = (lengths - 1).tolist()
    per_row: list[list[float]] = [[] for _ in order]
    offset = 0
    for t in range(max(steps)):
        running = sum(s > t for s in steps)  # sorted longest first: the first `running` captions
        for row in range(running):
            if targets[offset + row] != expected[row, t + 1]:
                raise RuntimeError("the decoder's teacher-forced output is not in the step-major layout "
                                   "word_probabilities expects; update captioner/faithfulness.py")
            per_row[row].append(float(probs[offset + row]))
        offset += running
    if offset != len(targets):
        raise RuntimeError(f"the decoder returned {len(targets)} teacher-forced rows, expected {offset}")
    result: list[np.ndarray] = [np.empty(0)] * len(order)
    for row, i in enumerate(order):
        result[i] = np.asarray(per_row[row])
    return result


class ModelScorer:
    """:class:`Scorer` over a :class:`~captioner.model.CaptionModel`, via its public calls only; it can also
    caption the blanked photos (with ``opts``, the decoding the evaluated captions came from)."""

    def __init__(self, model: Any, opts: DecodeOptions | None = None) -> None:
        self.model = model
        self.opts = opts or DecodeOptions()

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """B x L x D annotations of preprocessed pixels, on the model's device."""
        with _eval_mode(self.model.encoder):
            return self.model.encoder(pixels.to(self.model.device))

    def word_probs(self, feats: torch.Tensor, tokens: Sequence[Sequence[int]]) -> list[np.ndarray]:
        return word_probabilities(self.model, feats, tokens)

    def caption(self, feats: torch.Tensor) -> list[list[str]]:
        """The words the model says for each image of ``feats``, decoded as the evaluated captions were."""
        return [r.words for r in decode(self.model.decoder, feats, self.model.vocab, self.opts)]


# ---------------------------------------------------------------------------------- the test
def _cells_of(alpha: np.ndarray, k: int, rng: np.random.Generator) -> tuple[list[int], list[int], list[int]]:
    """(top-k, random k, bottom-k) cells of one attention map; ties go to the lower cell id."""
    order = np.argsort(-alpha, kind="stable")
    least = np.argsort(alpha, kind="stable")
    rand = rng.choice(len(alpha), size=k, replace=False)
    return order[:k].tolist(), sorted(rand.tolist()), least[:k].tolist()


def _grid_of(width: int, grid: int | None) -> int:
    """The attention grid: given, or the side whose square is the map width (one extra sentinel entry allowed)."""
    g = grid if grid is not None else math.isqrt(width)
    if g < 1 or width not in (g * g, g * g + 1):
        raise ValueError(f"attention maps of {width} entries do not fit a {g} x {g} grid")
    return g


@dataclass
class _Job:
    image: torch.Tensor  # 3 x S x S, the unblanked input
    tokens: list[int]  # the prefix up to and including the scored word
    cells: list[int]
    variant: int  # index into VARIANTS
    p_original: float
    word: str  # the scored word, looked for again in the blanked photo's caption


def _mean(xs: Sequence[float]) -> float | None:
    return float(np.mean(xs)) if len(xs) else None


def _se(xs: Sequence[float]) -> float | None:
    return float(np.std(xs, ddof=1) / math.sqrt(len(xs))) if len(xs) > 1 else None


def _ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when b is not positive (a ratio to a zero or negative baseline says nothing)."""
    return a / b if a is not None and b is not None and b > 1e-12 else None


def deletion_test(model: Any, images: Iterable[torch.Tensor | None], results: Sequence[CaptionResult],
                  k: int | None = None, seed: int = 0, *, grid: int | None = None, batch_size: int = 16,
                  on_image: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Blank each content word's top-k attended, k random and k least attended cells; report the drops.

    ``model`` is a :class:`Scorer` or a CaptionModel (wrapped in :class:`ModelScorer`); ``images``
    yields the 3 x S x S preprocessed input of each of ``results`` in order (lazily is fine; ``None``
    marks an image that could not be loaded and is skipped). ``grid`` defaults to the side of the
    attention maps. Cells are ranked by alpha even when a row sums to less than 1 (a visual
    sentinel takes the rest; a trailing sentinel entry is ignored). Re-encodings run ``batch_size`` at
    a time, the three variants of a word together. The random cells come from ``seed``: reproducible.
    ``on_image(n)`` is called as images are finished.

    Two forms of the answer: ``drop``, the mean fall in the word's teacher-forced probability, and,
    when the scorer can caption (:class:`ModelScorer` does), ``removed``: how often the word is gone
    from the caption of the blanked photo, which is what a user who erases the region sees.
    """
    scorer: Scorer = model if hasattr(model, "word_probs") else ModelScorer(model)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if grid is not None and k is not None:
        check_cells(k, grid * grid)  # before any work
    run = _Deletion(scorer, k, np.random.default_rng(seed), grid, batch_size, on_image)
    for image, res in zip(images, results):
        run.add(image, res)
    run.flush_images()
    return run.summary(seed)


class _Deletion:
    """The test's running state: images waiting for their original scores, re-encodings waiting for a batch."""

    def __init__(self, scorer: Scorer, k: int | None, rng: np.random.Generator, grid: int | None, batch_size: int,
                 on_image: Callable[[int], None] | None) -> None:
        self.scorer, self.k, self.rng, self.grid, self.batch_size = scorer, k, rng, grid, batch_size
        self.on_image = on_image
        self.recaption = callable(getattr(scorer, "caption", None))
        self.drops: dict[str, list[float]] = {v: [] for v in VARIANTS}
        self.removed: dict[str, list[float]] = {v: [] for v in VARIANTS}
        self.originals: list[float] = []
        self.jobs: list[_Job] = []
        self.pending: list[tuple[torch.Tensor, CaptionResult]] = []
        self.n_images = self.skipped = 0

    def add(self, image: torch.Tensor | None, res: CaptionResult) -> None:
        if image is None:
            self.skipped += 1
            if self.on_image is not None:
                self.on_image(1)
            return
        if len(res.words) != len(res.tokens) or np.ndim(res.alphas) != 2 or len(res.alphas) != len(res.words):
            raise ValueError("a CaptionResult needs one token and one attention map per word")
        self.grid = _grid_of(np.shape(res.alphas)[1], self.grid)
        if self.k is None:
            self.k = default_cells(self.grid * self.grid)
        check_cells(self.k, self.grid * self.grid)
        self.n_images += 1
        self.pending.append((image, res))
        if len(self.pending) >= self.batch_size:
            self.flush_images()

    def flush_images(self) -> None:
        """Score the pending images' words unblanked, then queue each content word's three blankings."""
        if not self.pending:
            return
        g, k = self.grid, self.k
        assert g is not None and k is not None
        scores = self.scorer.word_probs(self.scorer.encode(torch.stack([im for im, _ in self.pending])),
                                        [list(res.tokens) for _, res in self.pending])
        for (image, res), p_orig in zip(self.pending, scores):
            alphas = np.asarray(res.alphas, dtype=np.float64)[:, : g * g]  # cells only, not a sentinel
            for t, word in enumerate(res.words):
                if not is_content_word(word):
                    continue
                self.originals.append(float(p_orig[t]))
                for v, cells in enumerate(_cells_of(alphas[t], k, self.rng)):
                    self.jobs.append(_Job(image, list(res.tokens[: t + 1]), cells, v, float(p_orig[t]), word))
                if len(self.jobs) >= self.batch_size:
                    self.flush_jobs()
        self.flush_jobs()
        if self.on_image is not None:
            self.on_image(len(self.pending))
        self.pending.clear()

    def flush_jobs(self) -> None:
        """Re-encode the queued blanked images: each word's new probability and, if asked, the new caption."""
        if not self.jobs:
            return
        assert self.grid is not None
        pixels = blank_cells(torch.stack([j.image for j in self.jobs]), [j.cells for j in self.jobs], self.grid)
        feats = self.scorer.encode(pixels)
        probs = self.scorer.word_probs(feats, [j.tokens for j in self.jobs])
        captions = self.scorer.caption(feats) if self.recaption else [None] * len(self.jobs)  # type: ignore[attr-defined]
        for job, p, words in zip(self.jobs, probs, captions):
            self.drops[VARIANTS[job.variant]].append(job.p_original - float(p[len(job.tokens) - 1]))
            if words is not None:
                self.removed[VARIANTS[job.variant]].append(float(job.word not in words))
        self.jobs.clear()

    def summary(self, seed: int) -> dict[str, Any]:
        n_cells = self.grid * self.grid if self.grid is not None else None
        k = self.k if self.k is not None or n_cells is None else default_cells(n_cells)
        mean = {v: _mean(self.drops[v]) for v in VARIANTS}
        out: dict[str, Any] = {
            "images": self.n_images, "skipped_images": self.skipped, "words": len(self.originals), "k": k,
            "cells": n_cells, "seed": seed, "p_original": _mean(self.originals), "drop": mean,
            "drop_se": {v: _se(self.drops[v]) for v in VARIANTS},
            "ratio": {"attended_random": _ratio(mean["attended"], mean["random"]),
                      "attended_least": _ratio(mean["attended"], mean["least"])},
        }
        if self.recaption:
            gone = {v: _mean(self.removed[v]) for v in VARIANTS}
            out["removed"] = gone
            out["removed_ratio"] = {"attended_random": _ratio(gone["attended"], gone["random"]),
                                    "attended_least": _ratio(gone["attended"], gone["least"])}
        return out
