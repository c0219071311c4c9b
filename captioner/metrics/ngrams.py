"""n-gram counts of a tokenised caption: what CIDEr-D and BLEU both match against the references."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

Ngram = tuple[str, ...]


def ngram_counts(words: Sequence[str], n: int = 4) -> Counter[Ngram]:
    """Counts of every 1..n-gram of a tokenised caption."""
    counts: Counter[Ngram] = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts
