"""What captioning returns: :class:`CaptionResult`, and its ``caption --json`` form.

The JSON form is a contract that other tools read (the CLI, the HTML report, the web page and its
API all write it), so it is made in this one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class CaptionResult:
    """One caption with its per-word attention (alphas[t] is the map used to produce words[t])."""

    words: list[str]
    tokens: list[int]
    score: float  # length-normalised log-probability
    log_prob: float
    alphas: np.ndarray  # T x L (T = len(words))
    locations: list[int] | None = None  # hard attention: chosen cell per word
    alternatives: list["CaptionResult"] = field(default_factory=list)
    familiarity: float | None = None  # 0..1, how like the training photos the photo is (None: not fitted)
    erased: list[list[int]] | None = None  # the [x, y, w, h] boxes painted over before captioning, if any

    @property
    def caption(self) -> str:
        return " ".join(self.words)

    @property
    def image_weights(self) -> np.ndarray:
        """Each word's total weight on the image cells: 1, or 1 - its sentinel weight with a visual sentinel."""
        return np.asarray(self.alphas, dtype=np.float64).reshape(len(self.words), -1).sum(1)


def caption_entry(image: str, result: CaptionResult, model: str, grid: int) -> dict[str, Any]:
    """``{"image", "caption", "score", "words": [{"word", "attention": HxW, "location"?}], "model"}``.

    Hard attention adds ``location`` = [row, col] of the cell the model looked at for each word; a model
    with familiarity data adds ``familiarity`` (0..1, how like the training photos the photo is).
    """
    words = []
    for t, word in enumerate(result.words):
        item: dict[str, Any] = {"word": word,
                                "attention": [[round(float(x), 5) for x in row]
                                              for row in result.alphas[t].reshape(grid, grid)]}
        if result.locations is not None:
            item["location"] = list(divmod(int(result.locations[t]), grid))
        words.append(item)
    entry = {"image": image, "caption": result.caption, "score": round(float(result.score), 5), "words": words,
             "model": model}
    if result.familiarity is not None:  # models fitted with `captioner familiarity fit` only
        entry["familiarity"] = round(float(result.familiarity), 4)
    if result.erased is not None:  # boxes painted over first (caption --erase, the page's eraser)
        entry["erased"] = [list(map(int, box)) for box in result.erased]
    return entry


def error_entry(image: str, message: str, model: str) -> dict[str, Any]:
    """An image that could not be captioned, kept in the output so a batch reports every input."""
    return {"image": image, "error": message, "model": model}
