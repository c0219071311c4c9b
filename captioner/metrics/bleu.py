"""Sentence-level BLEU-4 as a per-caption reward, with the references of every image prepared once.

The arithmetic is pycocoevalcap's ``BleuScorer`` per sentence: clipped n-gram precisions for n = 1..4
(with its tiny additive constants, so a caption without a matching 4-gram scores about 0, not an error),
their geometric mean, and the brevity penalty against the reference closest in length. Corpus BLEU,
which evaluation reports, is not the mean of these, but it rises with them; the brevity penalty is what
keeps a CIDEr-trained model from drifting to ever shorter captions.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from ..errors import DataError
from .ngrams import Ngram, ngram_counts

_SMALL, _TINY = 1e-9, 1e-15  # pycocoevalcap's constants


class SentenceBleu:
    """BLEU-``n`` of single captions against fixed references: ``references[i]`` are image ``i``'s."""

    def __init__(self, references: Sequence[Sequence[Sequence[str]]], n: int = 4) -> None:
        if not references or any(len(refs) == 0 for refs in references):
            raise DataError("BLEU needs at least one reference caption for every image")
        self.n = n
        self._lengths = [[len(r) for r in refs] for refs in references]
        self._max_counts: list[dict[Ngram, int]] = []
        for refs in references:
            best: Counter[Ngram] = Counter()
            for r in refs:
                best |= ngram_counts(r, n)  # | keeps the larger count of each n-gram
            self._max_counts.append(dict(best))

    def score(self, image: int, words: Sequence[str]) -> float:
        """BLEU-n of one tokenised caption of image ``image``, in 0..1."""
        counts = ngram_counts(words, self.n)
        refs = self._max_counts[image]
        correct = [0] * self.n
        for gram, c in counts.items():
            correct[len(gram) - 1] += min(refs.get(gram, 0), c)
        length = len(words)
        bleu = 1.0
        for k in range(self.n):
            bleu *= (correct[k] + _TINY) / (max(0, length - k) + _SMALL)
        bleu **= 1.0 / self.n
        ref_len = min((abs(r - length), r) for r in self._lengths[image])[1]
        ratio = (length + _TINY) / (ref_len + _SMALL)
        return bleu * math.exp(1 - 1 / ratio) if ratio < 1 else bleu

    def scores(self, images: Sequence[int], captions: Sequence[Sequence[str]]) -> np.ndarray:
        """BLEU-n of ``captions[j]`` against the references of ``images[j]``, for every j."""
        return np.array([self.score(i, c) for i, c in zip(images, captions)], dtype=np.float64)


__all__ = ["SentenceBleu"]
