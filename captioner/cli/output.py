"""The ``caption --json`` contract: one plain dict per image, shared by the CLI, reports and the web page."""

from __future__ import annotations

from typing import Any

from ..model.search import CaptionResult


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
    return entry


def error_entry(image: str, message: str, model: str) -> dict[str, Any]:
    """An image that could not be captioned, kept in the output so a batch reports every input."""
    return {"image": image, "error": message, "model": model}
