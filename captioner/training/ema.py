"""An exponential moving average of the trained weights (Polyak averaging), used to validate and ship.

On a small dataset the weights after any one step are noisy: Flickr8k's dev BLEU-4 moves by a point
between consecutive epochs. Their running average sits nearer the middle of that noise, so validation
ranks epochs by the model's level rather than its luck, and the shipped weights are the averaged ones.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


class WeightAverage:
    """``shadow <- d * shadow + (1 - d) * weights`` after every optimizer step, for trainable parameters.

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the first updates
    are not tied to the starting weights for thousands of steps.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the average's decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self._params = {k: p for k, p in model.named_parameters() if p.requires_grad}
        self.shadow = {k: p.detach().float().clone() for k, p in self._params.items()}

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, p in self._params.items():
            self.shadow[k].lerp_(p.detach().float(), 1.0 - d)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Within the block the model holds the averaged weights; its own come back afterwards."""
        saved = {k: p.detach().clone() for k, p in self._params.items()}
        self._copy_into_params(self.shadow)
        try:
            yield
        finally:
            self._copy_into_params(saved)

    @torch.no_grad()
    def _copy_into_params(self, values: dict[str, torch.Tensor]) -> None:
        for k, p in self._params.items():
            p.copy_(values[k])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only (so the training state loads with ``weights_only=True``)."""
        return {**{f"shadow.{k}": v for k, v in self.shadow.items()}, "updates": torch.tensor(self.updates)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        shadow = {k[7:]: v for k, v in state.items() if k.startswith("shadow.")}
        if shadow.keys() != self.shadow.keys() or any(v.shape != self.shadow[k].shape for k, v in shadow.items()):
            raise ValueError("the saved weight average does not match this model")
        self.shadow = {k: v.float().clone() for k, v in shadow.items()}
        self.updates = int(state["updates"])


__all__ = ["WeightAverage"]
