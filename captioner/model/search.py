"""Greedy, batched beam search and sampling over :meth:`Decoder.step`: the one decoding module.

The CLI, evaluation and validation during training all call :func:`decode`, so there is exactly one
beam search to get right. Every path terminates: a hypothesis that never emits <end> is returned at
the length limit, and <end> is not allowed as the first word, so captions are never empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .decoder import Decoder
from .results import CaptionResult
from ..errors import ConfigError
from ..data.vocab import Vocab


@dataclass(frozen=True)
class DecodeOptions:
    beam: int = 3
    max_len: int = 20  # words, not counting <end>
    length_penalty: float = 1.0  # final score = sum log p / length ** length_penalty
    hard_mode: str | None = None  # hard attention: argmax | expect | sample (None: the model's default)
    location_samples: int = 1  # hard_mode sample: location paths per hypothesis, their word distributions averaged
    sample: bool = False  # sample words instead of searching (needs a seed for reproducibility)
    temperature: float = 1.0
    seed: int = 0
    ban_unk: bool = True
    no_repeat_ngram: int = 3  # n > 0: no word twice in a row and, for n >= 2, no n-gram twice in a caption; 0 = off

    def __post_init__(self) -> None:
        if self.location_samples < 1:
            raise ConfigError(f"--location-samples must be at least 1, got {self.location_samples}")


def _banned(vocab: Vocab, ban_unk: bool) -> list[int]:
    ids = [vocab.pad_id, vocab.start_id]
    return ids + ([vocab.unk_id] if ban_unk else [])


def _ban_repeats(logp: torch.Tensor, history: torch.Tensor, n: int) -> torch.Tensor:
    """Forbid each row's next word where it repeats the word just emitted ("two two dogs") or, for
    ``n`` >= 2, where it would complete an n-gram already in that row's ``history``.

    Banning every repeated word would forbid the second "a" of "a man in a hat": n-grams are the unit.
    """
    if n <= 0 or history.shape[1] == 0:
        return logp
    banned = torch.zeros_like(logp, dtype=torch.bool)
    banned.scatter_(1, history[:, -1:], True)
    if n >= 2 and history.shape[1] >= n:
        windows = history.unfold(1, n, 1)  # R x W x n: every n-gram so far
        match = (windows[:, :, :-1] == history[:, -(n - 1):].unsqueeze(1)).all(2)  # its first n-1 words end the row
        rows, cols = match.nonzero(as_tuple=True)
        banned[rows, windows[rows, cols, -1]] = True
    return logp.masked_fill(banned, -float("inf"))


def _norm(log_prob: float, length: int, penalty: float) -> float:
    return log_prob / max(length, 1) ** penalty


@dataclass
class _Step:
    logp: torch.Tensor  # R x V: log p(next word) of each row (hypothesis)
    h: torch.Tensor  # R x H, or R x S x H with S location paths per row
    c: torch.Tensor
    alpha: torch.Tensor  # R x L
    location: torch.Tensor | None  # R
    path_logp: torch.Tensor | None  # R x S x V: each path's own log p(next word)


def _next_step(decoder: Decoder, prev: torch.Tensor, h: torch.Tensor, c: torch.Tensor, memory, mode: str,
               gen: torch.Generator, path_weight: torch.Tensor | None, temperature: float = 1.0) -> _Step:
    """One decoding step. With ``path_weight`` (R x S, log p of the words so far under each of S sampled
    location paths), the word distribution is the paths' mixture, weighted by how well each path explains
    the prefix: a Monte-Carlo estimate of p(y_t | y_<t) with the locations marginalised out, where one
    sampled path would make the caption hinge on a single draw. The map shown is the mixture's too."""
    if path_weight is None:
        logits, out = decoder.next_logits(prev, h, c, memory, mode=mode, generator=gen)
        return _Step(torch.log_softmax(logits / temperature, dim=1), out.h, out.c, out.alpha, out.location, None)
    R, S, H = h.shape
    logits, out = decoder.next_logits(prev.repeat_interleave(S), h.reshape(R * S, H), c.reshape(R * S, H), memory,
                                      mode=mode, generator=gen)
    path_logp = torch.log_softmax(logits.float() / temperature, dim=1).view(R, S, -1)
    mix = torch.log_softmax(path_weight, dim=1)  # posterior over the paths given the prefix
    logp = torch.logsumexp(mix.unsqueeze(2) + path_logp, dim=1)
    alpha = (mix.exp().unsqueeze(2) * out.alpha.float().view(R, S, -1)).sum(1)
    location = out.location.view(R, S).gather(1, mix.argmax(1, keepdim=True)).squeeze(1) if out.location is not None else None
    return _Step(logp, out.h.view(R, S, H), out.c.view(R, S, H), alpha, location, path_logp)


def _paths(opts: DecodeOptions, mode: str, decoder: Decoder) -> int:
    """How many location paths each hypothesis carries (1 unless hard attention samples several)."""
    return opts.location_samples if (mode == "sample" and decoder.cfg.attention == "hard") else 1


def _start(decoder: Decoder, feats: torch.Tensor, rows: int, paths: int):
    """Memory and initial state for ``rows`` hypotheses per image, each with ``paths`` location paths
    (h, c: R x S x H and zero path weights when paths > 1)."""
    B = feats.shape[0]
    memory = decoder.memory(feats)
    if rows * paths > 1:
        memory = memory.select(torch.arange(B, device=feats.device).repeat_interleave(rows * paths))
    h, c = decoder.init_state(memory)
    if paths == 1:
        return memory, h, c, None
    R = B * rows
    return memory, h.view(R, paths, -1), c.view(R, paths, -1), torch.zeros(R, paths, device=feats.device)


def _grow_paths(path_weight: torch.Tensor | None, step: _Step, rows: torch.Tensor, word: torch.Tensor) -> torch.Tensor | None:
    """Each kept row's path weights plus its paths' log p of the word chosen."""
    if path_weight is None:
        return None
    chosen = step.path_logp.index_select(0, rows)
    return path_weight.index_select(0, rows) + chosen.gather(2, word.view(-1, 1, 1).expand(-1, chosen.shape[1], 1)).squeeze(2)


@torch.no_grad()
def greedy(decoder: Decoder, feats: torch.Tensor, vocab: Vocab, opts: DecodeOptions) -> list[CaptionResult]:
    """Most likely word at each step (or a sampled one with ``opts.sample``), for a batch of images."""
    B, device = feats.shape[0], feats.device
    mode = opts.hard_mode or decoder.cfg.hard_mode
    memory, h, c, path_weight = _start(decoder, feats, 1, _paths(opts, mode, decoder))
    gen = torch.Generator(device=device).manual_seed(opts.seed)
    prev = torch.full((B,), vocab.start_id, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    total = torch.zeros(B, device=device)
    tokens, alphas, locs = [], [], []
    banned = _banned(vocab, opts.ban_unk)
    for t in range(opts.max_len + 1):
        out = _next_step(decoder, prev, h, c, memory, mode, gen, path_weight, opts.temperature)
        h, c, logp = out.h, out.c, out.logp
        logp[:, banned] = -float("inf")
        if tokens:
            logp = _ban_repeats(logp, torch.stack(tokens, 1), opts.no_repeat_ngram)
        if t == 0:
            logp[:, vocab.end_id] = -float("inf")  # never an empty caption
        if t == opts.max_len:
            logp = torch.where(torch.arange(logp.shape[1], device=device) == vocab.end_id, 0.0, -float("inf")).expand_as(logp)
        word = torch.multinomial(logp.exp(), 1, generator=gen).squeeze(1) if opts.sample else logp.argmax(1)
        total = total + torch.where(done, 0.0, logp.gather(1, word.unsqueeze(1)).squeeze(1))
        word = torch.where(done, vocab.end_id, word)
        path_weight = _grow_paths(path_weight, out, torch.arange(B, device=device), word)
        tokens.append(word)
        alphas.append(out.alpha)
        locs.append(out.location)
        done = done | (word == vocab.end_id)
        prev = word
        if bool(done.all()):
            break
    tok = torch.stack(tokens, 1).cpu()
    alp = torch.stack(alphas, 1).float().cpu().numpy()
    loc = torch.stack(locs, 1).cpu() if locs[0] is not None else None
    results = []
    for i in range(B):
        ids = tok[i].tolist()
        n = ids.index(vocab.end_id) if vocab.end_id in ids else len(ids)
        lp = float(total[i])
        results.append(CaptionResult(
            words=vocab.decode(ids[:n]), tokens=ids[:n], score=_norm(lp, n + 1, opts.length_penalty), log_prob=lp,
            alphas=alp[i, :n], locations=loc[i, :n].tolist() if loc is not None else None))
    return results


@torch.no_grad()
def beam_search(decoder: Decoder, feats: torch.Tensor, vocab: Vocab, opts: DecodeOptions) -> list[CaptionResult]:
    """Batched beam search: all B images x K beams advance together as one B*K batch.

    Finished hypotheses stay in the beam, extended by a free <end>, so they compete with unfinished
    ones on their raw log-probability; the final ranking uses the length-normalised score.
    """
    B, K, device = feats.shape[0], opts.beam, feats.device
    V = decoder.cfg.vocab_size
    mode = opts.hard_mode or decoder.cfg.hard_mode
    memory, h, c, path_weight = _start(decoder, feats, K, _paths(opts, mode, decoder))
    gen = torch.Generator(device=device).manual_seed(opts.seed)
    scores = torch.full((B, K), -float("inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: keep one so the first step does not repeat it K times
    prev = torch.full((B * K,), vocab.start_id, dtype=torch.long, device=device)
    done = torch.zeros(B * K, dtype=torch.bool, device=device)
    lengths = torch.zeros(B * K, dtype=torch.long, device=device)
    tok_hist = torch.zeros(B * K, 0, dtype=torch.long, device=device)
    alpha_hist = torch.zeros(B * K, 0, memory.ann.shape[1], device=device)
    loc_hist = torch.zeros(B * K, 0, dtype=torch.long, device=device)
    banned = _banned(vocab, opts.ban_unk)
    end_only = torch.full((V,), -float("inf"), device=device)
    end_only[vocab.end_id] = 0.0
    base = (torch.arange(B, device=device) * K).unsqueeze(1)
    for t in range(opts.max_len + 1):
        out = _next_step(decoder, prev, h, c, memory, mode, gen, path_weight)
        logp = out.logp
        logp[:, banned] = -float("inf")
        logp = _ban_repeats(logp, tok_hist, opts.no_repeat_ngram)
        if t == 0:
            logp[:, vocab.end_id] = -float("inf")
        if t == opts.max_len:
            logp = end_only.expand_as(logp)
        logp = torch.where(done.unsqueeze(1), end_only, logp)  # finished: only a free <end>
        cand = (scores.reshape(-1, 1) + logp).reshape(B, K * V)
        scores, flat = cand.topk(K, dim=1)
        beam_idx = (base + flat // V).reshape(-1)
        word = (flat % V).reshape(-1)
        h, c = out.h.index_select(0, beam_idx), out.c.index_select(0, beam_idx)
        path_weight = _grow_paths(path_weight, out, beam_idx, word)
        was_done = done.index_select(0, beam_idx)
        lengths = lengths.index_select(0, beam_idx) + (~was_done).long()
        done = was_done | (word == vocab.end_id)
        tok_hist = torch.cat([tok_hist.index_select(0, beam_idx), word.unsqueeze(1)], 1)
        alpha_hist = torch.cat([alpha_hist.index_select(0, beam_idx), out.alpha.index_select(0, beam_idx).unsqueeze(1)], 1)
        if out.location is not None:
            loc_hist = torch.cat([loc_hist.index_select(0, beam_idx), out.location.index_select(0, beam_idx).unsqueeze(1)], 1)
        prev = word
        if bool(done.all()):
            break
    return _collect_beams(scores, tok_hist, alpha_hist, loc_hist, lengths, vocab, opts, B, K)


def _collect_beams(scores, tok_hist, alpha_hist, loc_hist, lengths, vocab, opts, B, K) -> list[CaptionResult]:
    tok, alp = tok_hist.cpu(), alpha_hist.float().cpu().numpy()
    loc = loc_hist.cpu() if loc_hist.shape[1] else None
    flat_scores, flat_len = scores.reshape(-1).cpu(), lengths.cpu()
    results = []
    for i in range(B):
        hyps = []
        for k in range(K):
            r = i * K + k
            lp = float(flat_scores[r])
            if lp == -float("inf"):
                continue  # fewer live hypotheses than beams (tiny vocabularies)
            n = int(flat_len[r]) - 1  # words, without <end>
            ids = tok[r, :n].tolist()
            hyps.append(CaptionResult(
                words=vocab.decode(ids), tokens=ids, score=_norm(lp, n + 1, opts.length_penalty), log_prob=lp,
                alphas=alp[r, :n], locations=loc[r, :n].tolist() if loc is not None else None))
        hyps.sort(key=lambda r: r.score, reverse=True)
        best = hyps[0]
        best.alternatives = hyps[1:]
        results.append(best)
    return results


def decode(decoder: Decoder, feats: torch.Tensor, vocab: Vocab, opts: DecodeOptions = DecodeOptions()) -> list[CaptionResult]:
    """Caption a batch of B x L x D features: greedy/sampling for beam 1, batched beam search above."""
    was_training = decoder.training
    decoder.eval()
    try:
        if opts.beam <= 1 or opts.sample:
            return greedy(decoder, feats, vocab, opts)
        return beam_search(decoder, feats, vocab, opts)
    finally:
        decoder.train(was_training)
