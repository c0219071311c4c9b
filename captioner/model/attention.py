"""Attention over the annotation grid: score functions and the soft / hard / local variants.

Scores e_ti compare the decoder state h_{t-1} with each annotation a_i; alpha_t = softmax(e_t).
Everything that depends only on the image (W_a a_i, P a_i) is computed once per image in ``keys``
and reused at every step: that is most of the per-step cost of naive implementations.

A score takes the keys of N images (N x L x K) and M queries for each (N x M x H) and gives N x M x L:
the captions of one image (or the beams of one hypothesis) read that image's keys where they are,
without a copy per caption (see :class:`captioner.model.decoder.Memory`).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class AdditiveScore(nn.Module):
    """Bahdanau / Xu et al. "concat": e_ti = v^T tanh(W_a a_i + W_h h)."""

    def __init__(self, ann_dim: int, hidden_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.w_a = nn.Linear(ann_dim, attention_dim)
        self.w_h = nn.Linear(hidden_dim, attention_dim, bias=False)
        self.v = nn.Linear(attention_dim, 1, bias=False)

    def keys(self, ann: torch.Tensor) -> torch.Tensor:
        return self.w_a(ann)  # N x L x A

    def forward(self, keys: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.v(torch.tanh(keys.unsqueeze(1) + self.w_h(h).unsqueeze(2))).squeeze(3)  # N x M x L


class GeneralScore(nn.Module):
    """Luong "general": e_ti = h^T W a_i, computed as (W^T h) . a_i so the grid is touched once."""

    def __init__(self, ann_dim: int, hidden_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.w = nn.Linear(hidden_dim, ann_dim, bias=False)
        self.scale = 1.0 / math.sqrt(ann_dim)

    def keys(self, ann: torch.Tensor) -> torch.Tensor:
        return ann

    def forward(self, keys: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.bmm(keys, self.w(h).transpose(1, 2)).transpose(1, 2) * self.scale  # N x M x L


class DotScore(nn.Module):
    """Luong "dot" with a projection P to the state size: e_ti = h^T P a_i (scaled by 1/sqrt(H))."""

    def __init__(self, ann_dim: int, hidden_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.p = nn.Linear(ann_dim, hidden_dim, bias=False)
        self.scale = 1.0 / math.sqrt(hidden_dim)

    def keys(self, ann: torch.Tensor) -> torch.Tensor:
        return self.p(ann)  # N x L x H

    def forward(self, keys: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.bmm(keys, h.transpose(1, 2)).transpose(1, 2) * self.scale  # N x M x L


SCORES = {"additive": AdditiveScore, "dot": DotScore, "general": GeneralScore}


class Attention(nn.Module):
    """alpha_t over the L grid cells; ``local`` multiplies it by a 2D Gaussian window and renormalises."""

    def __init__(self, kind: str, score: str, ann_dim: int, hidden_dim: int, attention_dim: int,
                 grid: int, local_sigma: float = 1.0) -> None:
        super().__init__()
        self.kind = kind
        self.score = SCORES[score](ann_dim, hidden_dim, attention_dim)
        self.grid = grid
        if kind == "local":
            # Luong's local-p in 2D: the centre p_t = grid * sigmoid(v_p^T tanh(W_p h)) per axis
            self.centre = nn.Sequential(nn.Linear(hidden_dim, attention_dim), nn.Tanh(), nn.Linear(attention_dim, 2))
            self.sigma = local_sigma
            rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
            self.register_buffer("cells", torch.stack([rows, cols], -1).reshape(-1, 2).float() + 0.5, persistent=False)

    def keys(self, ann: torch.Tensor) -> torch.Tensor:
        """Per-image precomputation, done once before decoding."""
        return self.score.keys(ann)

    def logits(self, scores: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Unnormalised log-weights (R x L) from the rows' scores (R x L) and states: kept apart from the
        softmax so a sentinel slot can join it; local attention adds the log of its window here."""
        logits = scores
        if self.kind != "local":
            return logits
        centre = self.grid * torch.sigmoid(self.centre(h))  # B x 2, in cell units
        dist2 = ((self.cells.unsqueeze(0) - centre.unsqueeze(1)) ** 2).sum(-1)  # B x L
        # multiplying alpha by the window == adding its log to the logits, then renormalising
        return logits - dist2 / (2 * self.sigma**2)

    def forward(self, keys: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Attention weights (B x L) of one query per image (B x L x K keys, B x H states), each row summing to 1."""
        return torch.softmax(self.logits(self.score(keys, h.unsqueeze(1)).squeeze(1), h), dim=1)


def hard_sample(alpha: torch.Tensor, mode: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick one location per row: ``sample`` s ~ Multinoulli(alpha), or ``argmax``."""
    if mode == "sample":
        return torch.multinomial(alpha, 1, generator=generator).squeeze(1)
    return alpha.argmax(dim=1)


def entropy(alpha: torch.Tensor) -> torch.Tensor:
    """Entropy of each row of alpha (B), for the hard-attention entropy bonus."""
    return -(alpha * torch.log(alpha.clamp_min(1e-12))).sum(1)


__all__ = ["Attention", "SCORES", "hard_sample", "entropy"]
