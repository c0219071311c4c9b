"""Checking one photo's heatmaps: erase what each word looked at, caption again, see whether the word survives.

The deletion test (:mod:`captioner.evaluation.deletion`) measures this in bulk; ``captioner explain`` shows
it for one photo a person can look at. For every content word of the caption, the photo regions of its most
attended cells (10% of the grid, as in the deletion test) are erased (:mod:`captioner.data.erase`) and the
photo captioned again; the same is done with as many random cells (seeded), so "the word is gone" can be
told apart from "erasing anything changes the caption".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from ..data.erase import cell_boxes, erase
from ..model.results import CaptionResult
from ..model.search import DecodeOptions
from .deletion import default_cells, is_content_word


@dataclass
class Erasure:
    """One erased photo: which cells, which pixels, the caption then, and whether the word is still in it."""

    cells: list[int]
    boxes: list[list[int]]
    caption: str
    survives: bool


@dataclass
class WordCheck:
    word: str
    index: int  # position in the caption
    attended: Erasure  # its most attended cells erased
    random: Erasure  # as many random cells erased


@dataclass
class Explanation:
    image: str
    caption: str
    model: str
    cells: int  # cells erased per word
    grid: int
    words: list[WordCheck] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        n = len(self.words)
        gone = sum(not w.attended.survives for w in self.words)
        gone_random = sum(not w.random.survives for w in self.words)
        return {"content_words": n, "gone_attended": gone, "gone_random": gone_random}

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary()}


def explain(model: Any, image: Image.Image, label: str, opts: DecodeOptions = DecodeOptions(),
            cells: int | None = None, seed: int = 0) -> Explanation:
    """Caption ``image``, then erase each content word's attended cells (and as many random ones) and caption
    again. The random cells of word t come from ``(seed, t)``: the same photo and seed give the same report."""
    result: CaptionResult = model.caption_images([image], opts)[0]
    grid = model.cfg.grid
    n_cells = grid * grid
    k = cells or default_cells(n_cells)
    report = Explanation(label, result.caption, model.name, k, grid)
    jobs: list[tuple[int, list[int], list[int]]] = []
    for t, word in enumerate(result.words):
        if is_content_word(word):
            alpha = np.asarray(result.alphas[t], dtype=np.float64)[:n_cells]
            top = np.argsort(-alpha, kind="stable")[:k].tolist()
            rand = sorted(np.random.default_rng([seed, t]).choice(n_cells, size=k, replace=False).tolist())
            jobs.append((t, top, rand))
    erased = [erase(image, cell_boxes(chosen, grid, *image.size)) for _, top, rand in jobs for chosen in (top, rand)]
    captions = model.caption_images([im for im, _ in erased], opts) if erased else []
    for j, (t, top, rand) in enumerate(jobs):
        word = result.words[t]
        (_, boxes_a), (_, boxes_r) = erased[2 * j], erased[2 * j + 1]
        cap_a, cap_r = captions[2 * j], captions[2 * j + 1]
        report.words.append(WordCheck(word, t, Erasure(top, boxes_a, cap_a.caption, word in cap_a.words),
                                      Erasure(rand, boxes_r, cap_r.caption, word in cap_r.words)))
    return report


def report_text(report: Explanation) -> str:
    """The plain report: the caption, then a line per content word."""
    lines = [f"{report.image}\t{report.caption}"]
    width = max((len(w.word) for w in report.words), default=4)
    for w in report.words:
        lines.append(f"  {w.word:<{width}}  erasing what it looked at: {'kept' if w.attended.survives else 'GONE'}"
                     f" ({w.attended.caption!r}); erasing {report.cells} random cells: "
                     f"{'kept' if w.random.survives else 'GONE'}")
    s = report.summary()
    lines.append(f"  {s['gone_attended']} of {s['content_words']} words gone when the cells they looked at are "
                 f"erased, {s['gone_random']} of {s['content_words']} with as many random cells "
                 f"({report.cells} of {report.grid * report.grid} cells each)")
    return "\n".join(lines)
