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
    """:class:`Scorer` over a :class:`~captioner.model.CaptionModel`, via its public calls only."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """B x L x D annotations of preprocessed pixels, on the model's device."""
        with _eval_mode(self.model.encoder):
            return self.model.encoder(pixels.to(self.model.device))

    def word_probs(self, feats: torch.Tensor, tokens: Sequence[Sequence[int]]) -> list[np.ndarray]:
        return word_probabilities(self.model, feats, tokens)


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
    """
    scorer: Scorer = model if hasattr(model, "word_probs") else ModelScorer(model)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    rng = np.random.default_rng(seed)
    g = grid
    if g is not None and k is not None:
        check_cells(k, g * g)  # before any work
    drops: dict[str, list[float]] = {v: [] for v in VARIANTS}
    originals: list[float] = []
    jobs: list[_Job] = []  # re-encodings waiting for a batch
    pending: list[tuple[torch.Tensor, CaptionResult]] = []  # images waiting for their original scores
    n_images = skipped = 0

    def flush_jobs() -> None:
        if jobs:
            assert g is not None
            pixels = blank_cells(torch.stack([j.image for j in jobs]), [j.cells for j in jobs], g)
            probs = scorer.word_probs(scorer.encode(pixels), [j.tokens for j in jobs])
            for job, p in zip(jobs, probs):
                drops[VARIANTS[job.variant]].append(job.p_original - float(p[len(job.tokens) - 1]))
            jobs.clear()

    def flush_images() -> None:
        if not pending:
            return
        assert g is not None and k is not None
        scores = scorer.word_probs(scorer.encode(torch.stack([im for im, _ in pending])),
                                   [list(res.tokens) for _, res in pending])
        for (image, res), p_orig in zip(pending, scores):
            alphas = np.asarray(res.alphas, dtype=np.float64)[:, : g * g]  # cells only, not a sentinel
            for t, word in enumerate(res.words):
                if not is_content_word(word):
                    continue
                originals.append(float(p_orig[t]))
                for v, cells in enumerate(_cells_of(alphas[t], k, rng)):
                    jobs.append(_Job(image, list(res.tokens[: t + 1]), cells, v, float(p_orig[t])))
                if len(jobs) >= batch_size:
                    flush_jobs()
        flush_jobs()
        if on_image is not None:
            on_image(len(pending))
        pending.clear()

    for image, res in zip(images, results):
        if image is None:
            skipped += 1
            if on_image is not None:
                on_image(1)
            continue
        if len(res.words) != len(res.tokens) or np.ndim(res.alphas) != 2 or len(res.alphas) != len(res.words):
            raise ValueError("a CaptionResult needs one token and one attention map per word")
        g = _grid_of(np.shape(res.alphas)[1], g)
        if k is None:
            k = default_cells(g * g)
        check_cells(k, g * g)
        n_images += 1
        pending.append((image, res))
        if len(pending) >= batch_size:
            flush_images()
    flush_images()
    n_cells = g * g if g is not None else None
    if k is None and n_cells is not None:
        k = default_cells(n_cells)
    mean = {v: _mean(drops[v]) for v in VARIANTS}
    return {
        "images": n_images,
        "skipped_images": skipped,
        "words": len(originals),
        "k": k,
        "cells": n_cells,
        "seed": seed,
        "p_original": _mean(originals),
        "drop": mean,
        "drop_se": {v: _se(drops[v]) for v in VARIANTS},
        "ratio": {"attended_random": _ratio(mean["attended"], mean["random"]),
                  "attended_least": _ratio(mean["attended"], mean["least"])},
    }
