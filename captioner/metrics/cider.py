"""CIDEr-D as a per-caption reward, fast enough to score every sampled caption of a training batch.

Self-critical training needs the CIDEr-D of thousands of sampled captions per epoch against the
references of their images. pycocoevalcap recomputes document frequencies and reference vectors on
every call; here they are computed once from the training references, so scoring a caption costs only
its own n-grams. The arithmetic is pycocoevalcap's ``CiderScorer`` (tf-idf n-gram vectors for n = 1..4,
clipped cosine similarity, Gaussian length penalty with sigma 6, times 10), so a caption's reward is
the CIDEr-D that pycocoevalcap would give it with the same document frequencies (tested).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from ..errors import DataError

Ngram = tuple[str, ...]


def ngram_counts(words: Sequence[str], n: int = 4) -> Counter[Ngram]:
    """Counts of every 1..n-gram of a tokenised caption."""
    counts: Counter[Ngram] = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


class _Vector:
    """A caption's tf-idf vectors per n-gram order, their norms, and CIDEr's length (its bigram count)."""

    __slots__ = ("vec", "norm", "length")

    def __init__(self, vec: list[dict[Ngram, float]], norm: list[float], length: int) -> None:
        self.vec, self.norm, self.length = vec, norm, length


class CiderD:
    """CIDEr-D against fixed references: ``references[i]`` holds the tokenised captions of image ``i``.

    Document frequencies come from these references (one document per image), as pycocoevalcap computes
    them from the references of the set it scores.
    """

    def __init__(self, references: Sequence[Sequence[Sequence[str]]], n: int = 4, sigma: float = 6.0) -> None:
        if not references or any(len(refs) == 0 for refs in references):
            raise DataError("CIDEr-D needs at least one reference caption for every image")
        self.n, self.sigma = n, sigma
        cooked = [[ngram_counts(r, n) for r in refs] for refs in references]
        df: Counter[Ngram] = Counter()
        for refs in cooked:
            df.update({g for counts in refs for g in counts})
        self._df = df
        self._log_docs = math.log(float(len(references)))
        self._refs = [[self._vector(c) for c in refs] for refs in cooked]

    def __len__(self) -> int:
        return len(self._refs)

    def _vector(self, counts: Counter[Ngram]) -> _Vector:
        vec: list[dict[Ngram, float]] = [{} for _ in range(self.n)]
        norm = [0.0] * self.n
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            w = tf * (self._log_docs - math.log(max(1.0, self._df.get(gram, 0.0))))
            vec[k][gram] = w
            norm[k] += w * w
            if k == 1:  # pycocoevalcap's "length" counts bigrams; kept so the scores agree
                length += tf
        return _Vector(vec, [math.sqrt(x) for x in norm], length)

    def score(self, image: int, words: Sequence[str]) -> float:
        """CIDEr-D of one tokenised caption of image ``image`` (pycocoevalcap's scale: about 0..10)."""
        hyp = self._vector(ngram_counts(words, self.n))
        refs = self._refs[image]
        total = 0.0
        for ref in refs:
            penalty = math.exp(-((hyp.length - ref.length) ** 2) / (2 * self.sigma**2))
            for k in range(self.n):
                if hyp.norm[k] == 0 or ref.norm[k] == 0:
                    continue
                ref_vec = ref.vec[k]
                dot = sum(min(w, ref_vec.get(g, 0.0)) * ref_vec.get(g, 0.0) for g, w in hyp.vec[k].items())
                total += penalty * dot / (hyp.norm[k] * ref.norm[k])
        return 10.0 * total / (self.n * len(refs))

    def scores(self, images: Sequence[int], captions: Sequence[Sequence[str]]) -> np.ndarray:
        """CIDEr-D of ``captions[j]`` against the references of ``images[j]``, for every j."""
        return np.array([self.score(i, c) for i, c in zip(images, captions)], dtype=np.float64)


__all__ = ["CiderD", "ngram_counts"]
