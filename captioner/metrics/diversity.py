"""Caption diversity: how many distinct captions, how many words, how many copied from training."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from ..errors import DataError


_PUNCT = re.compile(r"[^\w\s]")


def normalize_caption(text: str) -> str:
    """Lower-case, punctuation removed, whitespace collapsed: the form in which captions count as equal."""
    return " ".join(_PUNCT.sub("", text.lower()).split())


def diversity(captions: Sequence[str], training_captions: Iterable[str] = ()) -> dict[str, float]:
    """How varied the generated captions are, to catch a model that says one safe sentence everywhere.

    Returns ``captions`` (count), ``vocab_size`` (distinct words used), ``distinct_pct`` (% of captions
    that are unique), ``avg_length`` (words per caption), and, when ``training_captions`` are given,
    ``copied_pct`` (% of captions found verbatim in the training set). Captions are compared after
    :func:`normalize_caption`.
    """
    if isinstance(captions, str):
        raise DataError("diversity() needs a list of captions, got a single string; wrap it in a list")
    if len(captions) == 0:
        raise DataError("empty split: no captions to measure diversity on")
    norm = [normalize_caption(c) for c in captions]
    words = [c.split() for c in norm]
    n = len(norm)
    out = {
        "captions": float(n),
        "vocab_size": float(len({w for ws in words for w in ws})),
        "distinct_pct": 100.0 * len(set(norm)) / n,
        "avg_length": sum(len(ws) for ws in words) / n,
    }
    train = {normalize_caption(c) for c in training_captions}
    if train:
        out["copied_pct"] = 100.0 * sum(c in train for c in norm) / n
    return out
