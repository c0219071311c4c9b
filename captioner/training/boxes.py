"""Box supervision of attention (after Liu et al., "Attention Correctness in Neural Image Captioning", AAAI 2017).

Where a COCO instances file gives boxes, every training word that names a category of its image gets a
target map gamma over the grid: uniform over the cells the category's boxes cover. The loss
-sum_i gamma_i log alpha_i pulls that word's attention into the boxes. Masks are kept per image and
category present (a few cells each), never as a dense images x categories x cells array, so COCO's
113k images and 80 categories stay small.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..data.records import Record
from ..errors import DataError
from ..data.instances import ImageBoxes, InstancesIndex, category_for_word, instance_key
from ..data.vocab import Vocab


@dataclass
class BoxTargets:
    """What the box loss needs: which category each word names, and each training image's cell masks."""

    word_category: torch.Tensor  # V: index into ``categories`` of the category a word names, -1 for none
    categories: tuple[str, ...]
    masks: list[dict[int, np.ndarray]]  # per training image: category index -> L bool cells its boxes cover

    def targets(self, images: Sequence[int], words: torch.Tensor, owner: torch.Tensor, cells: int) -> tuple[torch.Tensor, torch.Tensor]:
        """gamma (n x L, rows sum to 1) and the rows of ``words`` they belong to, for the words naming a boxed category.

        ``words`` are target word ids, ``owner`` the batch-local image of each, ``images`` the training-image
        index of each batch-local image.
        """
        cats = self.word_category[words.cpu()]
        rows, maps = [], []
        for r in (cats >= 0).nonzero().squeeze(1).tolist():
            mask = self.masks[images[int(owner[r])]].get(int(cats[r]))
            if mask is not None:
                rows.append(r)
                maps.append(mask)
        if not rows:
            return torch.zeros(0, cells), torch.zeros(0, dtype=torch.long)
        gamma = torch.from_numpy(np.stack(maps).astype(np.float32))
        return gamma / gamma.sum(1, keepdim=True), torch.tensor(rows, dtype=torch.long)


def cell_mask(image: ImageBoxes, category: str, grid: int) -> np.ndarray:
    """The grid cells (L bool, row-major) whose centres lie in a box of ``category``; a box too small to hold
    any centre marks the cell under its own centre, so every box counts."""
    boxes = image.boxes(category)
    cy = (np.arange(grid) + 0.5) * image.height / grid
    cx = (np.arange(grid) + 0.5) * image.width / grid
    mask = np.zeros((grid, grid), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        inside = ((cy >= y0) & (cy < y1))[:, None] & ((cx >= x0) & (cx < x1))[None, :]
        if not inside.any():
            r = min(int((y0 + y1) / 2 / image.height * grid), grid - 1)
            c = min(int((x0 + x1) / 2 / image.width * grid), grid - 1)
            inside[r, c] = True
        mask |= inside
    return mask.reshape(-1)


def box_targets(records: Sequence[Record], instances: InstancesIndex, vocab: Vocab, grid: int) -> BoxTargets:
    """Targets for the training images ``records`` (in training order); images missing from the file are an error."""
    entries = [instances.find(instance_key(r, instances)) for r in records]
    missing = sum(e is None for e in entries)
    if missing:
        first = next(r.image_path for r, e in zip(records, entries) if e is None)
        raise DataError(f"{instances.source}: {missing} of {len(records)} training images have no entry (first: "
                        f"{first}); pass the instances file that belongs to the training captions")
    cats = instances.categories
    index = {c: i for i, c in enumerate(cats)}
    word_category = torch.full((len(vocab),), -1, dtype=torch.long)
    for i, w in enumerate(vocab.itos):
        c = category_for_word(w, cats)
        if c is not None:
            word_category[i] = index[c]
    masks = [{index[c]: cell_mask(e, c, grid) for c in dict.fromkeys(cat for cat, _ in e.objects)}
             for e in entries if e is not None]
    return BoxTargets(word_category, cats, masks)


def box_loss(alphas: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Mean over words of -sum_i gamma_i log alpha_i (zero when no word names a boxed category)."""
    if len(gamma) == 0:
        return alphas.new_zeros(())
    return -(gamma.to(alphas.device) * torch.log(alphas.float().clamp_min(1e-8))).sum(1).mean()
