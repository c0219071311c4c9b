"""Sampling captions with gradients: the draws self-critical training rewards.

Sampling is decoding: it runs through :meth:`Decoder.next_logits`, the step every other path uses, with
the same bans as caption search (<pad>, <start>, <unk> never; <end> never first), but keeps the graph so
the sampled captions' log-probabilities can be trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.vocab import Vocab
from .decoder import Decoder, Memory


@dataclass
class Samples:
    """``n`` sampled captions per image, image-major: rows i*n .. i*n+n-1 belong to image i."""

    tokens: torch.Tensor  # N x T word ids, each row ended by <end> (or cut at the length limit), then <pad>
    lengths: torch.Tensor  # N: tokens per row including <end>
    log_prob: torch.Tensor  # N: sum of log p(word) (+ log alpha(location) for hard attention), with gradient
    alpha_sum: torch.Tensor  # N x L: attention summed over the steps (doubly stochastic regulariser)
    per_image: int

    def words(self, vocab: Vocab) -> list[list[str]]:
        return [vocab.decode(row[: int(n)].tolist()) for row, n in zip(self.tokens.cpu(), self.lengths.cpu())]


def sample_captions(decoder: Decoder, feats: torch.Tensor, vocab: Vocab, per_image: int, max_len: int,
                    generator: torch.Generator | None = None, replay: torch.Tensor | None = None,
                    location_mode: str = "sample") -> Samples:
    """Sample ``per_image`` captions for each of the B images of ``feats`` (B x L x D), keeping gradients.

    The sampling distribution is the one decoding searches: <pad>, <start> and <unk> are never emitted,
    <end> never first, and <end> is forced (log-probability 0) after ``max_len`` words. Rows that have
    ended leave the batch, so the cost follows the captions' real lengths. ``replay`` (the ``tokens`` of
    earlier samples) takes those words instead of drawing new ones: their log-probabilities now.
    Hard attention samples its locations too (``location_mode`` ``sample``: part of the sampled choice,
    so in ``log_prob``), or takes the most likely cell (``argmax``: the cells decoding picks, no choice).
    """
    B, device = feats.shape[0], feats.device
    N = B * per_image
    grids = decoder.memory(feats)  # one per image: the samples of an image read it in place
    memory = Memory.for_rows(grids.ann, grids.keys, torch.arange(B, device=device).repeat_interleave(per_image))
    h, c = decoder.init_state(memory)
    hard = decoder.cfg.attention == "hard"
    banned = torch.tensor([vocab.pad_id, vocab.start_id, vocab.unk_id], device=device)
    rows = torch.arange(N, device=device)  # the rows still running
    prev = torch.full((N,), vocab.start_id, dtype=torch.long, device=device)
    log_prob = feats.new_zeros(N, dtype=torch.float32)
    alpha_sum = feats.new_zeros(N, memory.ann.shape[1], dtype=torch.float32)
    tokens = torch.full((N, max_len + 1), vocab.pad_id, dtype=torch.long, device=device)
    lengths = torch.zeros(N, dtype=torch.long, device=device)
    for t in range(max_len + 1):
        logits, out = decoder.next_logits(prev, h, c, memory, mode=location_mode, generator=generator)
        alpha_sum = alpha_sum.index_add(0, rows, out.alpha.float())
        if t == max_len:  # the length limit: <end> is forced, so it carries no choice and no gradient
            word = torch.full_like(prev, vocab.end_id)
        else:
            logits = logits.float().index_fill(1, banned, -float("inf"))
            if t == 0:
                logits = logits.index_fill(1, torch.tensor([vocab.end_id], device=device), -float("inf"))
            logp = F.log_softmax(logits, dim=1)
            if replay is None:
                word = torch.multinomial(logp.detach().exp(), 1, generator=generator).squeeze(1)
            else:
                word = replay[rows, t]
            step_lp = logp.gather(1, word.unsqueeze(1)).squeeze(1)
            if hard and location_mode == "sample" and out.log_location is not None:
                step_lp = step_lp + out.log_location.float()
            log_prob = log_prob.index_add(0, rows, step_lp)
        tokens[rows, t] = word
        lengths[rows] = t + 1
        running = word != vocab.end_id
        if not bool(running.any()):
            break
        keep = running.nonzero().squeeze(1)
        rows, prev = rows[keep], word[keep]
        h, c, memory = out.h[keep], out.c[keep], memory.select(keep)
    return Samples(tokens[:, : int(lengths.max())], lengths, log_prob, alpha_sum, per_image)
