"""Sentence METEOR as a per-caption reward, from the same Java program that evaluation scores with.

CIDEr-D rewards the n-grams a caption shares with its references, weighted by their rarity; it gives
nothing for a word that is only a stem or synonym away from a reference word, and its length penalty
is symmetric. METEOR aligns words through exact forms, stems, WordNet synonyms and paraphrases and
weights recall nine times precision, so a model trained on CIDEr-D alone keeps the METEOR its
cross-entropy stage reached (BENCHMARKS.md). Adding METEOR to the reward asks for that recall directly.

There is no faithful Python METEOR (its paraphrase tables and alignment search live in the jar), so
each batch's captions go through pycocoevalcap's ``meteor-1.5.jar`` in ``-stdio`` mode, one JVM kept
for the whole run: a round trip per caption, far cheaper than sampling it.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from .meteor_jvm import close_meteor, meteor_scores, start_meteor


class SentenceMeteor:
    """METEOR 1.5 (``-l en -norm``, pycocoevalcap's settings) of single captions against fixed references.

    ``references[i]`` holds the tokenised captions of image ``i``. The JVM starts on the first call
    (it spends seconds loading its paraphrase table) and ends with :meth:`close`, or at once if an exchange
    with it breaks off (an interrupted batch leaves no JVM that would hang the garbage collector).
    """

    def __init__(self, references: Sequence[Sequence[Sequence[str]]]) -> None:
        if not references or any(len(refs) == 0 for refs in references):
            raise DataError("METEOR needs at least one reference caption for every image")
        if shutil.which("java") is None:
            raise ConfigError("a METEOR reward needs Java (METEOR is a Java program) and no 'java' is on the PATH; "
                              "install Java 17 or leave --scst-meteor-weight at 0")
        self._refs = [[" ".join(r) for r in refs] for refs in references]
        self._meteor: Any = None

    def scores(self, images: Sequence[int], captions: Sequence[Sequence[str]]) -> np.ndarray:
        """METEOR of ``captions[j]`` against the references of ``images[j]``, for every j, in 0..1."""
        out = np.zeros(len(captions), dtype=np.float64)
        todo = [j for j, c in enumerate(captions) if c]  # an empty caption matches nothing: 0
        if not todo:
            return out
        if self._meteor is None:
            self._meteor = start_meteor()
        gts = {k: self._refs[images[j]] for k, j in enumerate(todo)}
        res = {k: [" ".join(captions[j])] for k, j in enumerate(todo)}
        try:
            _, per_caption = meteor_scores(self._meteor, gts, res, "leave --scst-meteor-weight at 0")
        except BaseException:
            self._meteor = None  # ended by _meteor_scores; the next call starts a new JVM
            raise
        out[todo] = per_caption
        return out

    def close(self) -> None:
        """End the JVM now rather than whenever the garbage collector gets to it."""
        close_meteor(self._meteor)
        self._meteor = None


__all__ = ["SentenceMeteor"]
