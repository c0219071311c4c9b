"""The Show, Attend and Tell LSTM decoder.

One :meth:`Decoder.step` serves teacher-forced training, greedy, beam search and sampling, so every
decoding path sees exactly the model that was trained. Shapes: B batch, L = grid**2 locations,
D encoder channels, P projected annotation size, H LSTM size, E embedding size, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention, entropy, hard_sample
from .config import ModelConfig, resolve_score


@dataclass
class Memory:
    """Per-image tensors computed once and read at every step, and how the decoder's rows read them.

    Without ``image`` there is one entry per row (each row is an image, or a beam holding its own copy):
    a score is one query against one grid. With ``image``, ``ann`` and ``keys`` hold one grid per image;
    row r reads grid ``image[r]`` and sits at place ``rank[r]`` among that image's rows. The rows of an
    image (its captions, or its samples) are scored against its grid together, as one n x m x L product
    over the n images and m places in use, and nothing the size of a grid is copied per row: only the
    rows' queries and weights move, into the places and back.
    """

    ann: torch.Tensor  # N x L x P projected annotations
    keys: torch.Tensor  # N x L x * attention keys (score-specific precomputation)
    image: torch.Tensor | None = None  # R: the grid each row reads; None: row r reads entry r
    rank: torch.Tensor | None = None  # R: the row's place among the rows of its image

    @staticmethod
    def for_rows(ann: torch.Tensor, keys: torch.Tensor, image: torch.Tensor) -> "Memory":
        """Per-image memory read by rows of images ``image`` (any order, any number per image); each image's
        rows take places 0, 1, ... in their order, so when rows are sorted longest first, the rows still
        running use the first places and the images still running, if numbered by first row, the first grids."""
        counts = torch.bincount(image, minlength=ann.shape[0])
        order = torch.argsort(image, stable=True)
        start = torch.cumsum(counts, 0) - counts  # where each image's rows begin in ``order``
        rank = torch.empty_like(image)
        rank[order] = torch.arange(len(order), device=order.device) - start[image[order]]
        return Memory(ann, keys, image, rank)

    def first(self, n: int) -> "Memory":
        """The first ``n`` rows (teacher forcing: the captions still running)."""
        if self.image is None or self.rank is None:
            return Memory(self.ann[:n], self.keys[:n])
        return Memory(self.ann, self.keys, self.image[:n], self.rank[:n])

    def select(self, index: torch.Tensor) -> "Memory":
        """Rows ``index`` (beam search expands and reorders images; finished samples leave)."""
        if self.image is None or self.rank is None:
            return Memory(self.ann.index_select(0, index), self.keys.index_select(0, index))
        return Memory(self.ann, self.keys, self.image.index_select(0, index), self.rank.index_select(0, index))

    def _places(self) -> tuple[int, int, torch.Tensor]:
        """(n images in use, m places in use, each row's index into the flat n x m places)."""
        assert self.image is not None and self.rank is not None
        m = int(self.rank.max()) + 1
        return int(self.image.max()) + 1, m, self.image * m + self.rank

    def _grouped(self, source: torch.Tensor, rows: torch.Tensor, fn) -> torch.Tensor:
        """``fn(grids, places)`` with the rows' values (R x F) put in their images' places (n x m x F, zeros
        where no row sits), and its n x m x G result read back per row (R x G)."""
        n, m, flat = self._places()
        grids = source if n == len(source) else source[:n]  # a full slice would cost its backward a copy
        places = rows.new_zeros(n * m, rows.shape[1]).index_copy(0, flat, rows).view(n, m, -1)
        out = fn(grids, places)
        return out.reshape(n * m, -1).index_select(0, flat)

    def scores(self, score: nn.Module, query: torch.Tensor) -> torch.Tensor:
        """``score`` of each row's query (R x H) against its image's keys: R x L."""
        if self.image is None:
            return score(self.keys, query.unsqueeze(1)).squeeze(1)
        return self._grouped(self.keys, query, score)

    def context(self, alpha: torch.Tensor) -> torch.Tensor:
        """Expected context sum_i alpha_i a_i of each row (R x P)."""
        if self.image is None:
            return torch.bmm(alpha.unsqueeze(1), self.ann).squeeze(1)
        return self._grouped(self.ann, alpha.to(self.ann.dtype), lambda ann, a: torch.bmm(a, ann))

    def pick(self, location: torch.Tensor) -> torch.Tensor:
        """The annotation at one chosen cell per row (R x P)."""
        if self.image is None:
            return self.ann[torch.arange(self.ann.shape[0], device=self.ann.device), location]
        L = self.ann.shape[1]
        return self.ann.reshape(-1, self.ann.shape[2]).index_select(0, self.image * L + location)


@dataclass
class StepOut:
    h: torch.Tensor  # B x H
    c: torch.Tensor  # B x H
    z: torch.Tensor  # B x P gated context
    alpha: torch.Tensor  # B x L weights on the image cells: sum to 1, or to 1 - sentinel with a sentinel
    location: torch.Tensor | None  # B chosen cells (hard attention), else None
    sentinel: torch.Tensor | None = None  # B weight on the visual sentinel (how much the word did not look)
    log_location: torch.Tensor | None = None  # B log p(s_t) of the chosen cells (hard attention)


def over_cells(alpha: torch.Tensor, sentinel: torch.Tensor | None) -> torch.Tensor:
    """The cells' weights renormalised to sum to 1 (a sentinel's share removed): where hard attention samples."""
    return alpha if sentinel is None else alpha / (1.0 - sentinel).clamp_min(1e-6).unsqueeze(1)


class FusedProjection(nn.Module):
    """Fused features -> P per fine cell: W_f fine + upsample(W_c head), the FPN top-down sum.

    The head arrives pixel-shuffled onto the fine grid (see :class:`Encoder`); unshuffling it back
    projects each coarse cell once, a quarter of the work of projecting a head upsampled beforehand.
    """

    def __init__(self, fine_dim: int, feature_dim: int, proj_dim: int, grid: int) -> None:
        super().__init__()
        self.fine_dim, self.grid = fine_dim, grid
        self.fine = nn.Linear(fine_dim, proj_dim)
        self.coarse = nn.Linear((feature_dim - fine_dim) * 4, proj_dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        B, L, _ = feats.shape
        g = self.grid
        head = feats[..., self.fine_dim:].transpose(1, 2).reshape(B, -1, g, g)
        head = F.pixel_unshuffle(head, 2).flatten(2).transpose(1, 2)  # B x L/4 x D32
        coarse = self.coarse(head).transpose(1, 2).reshape(B, -1, g // 2, g // 2)
        coarse = F.interpolate(coarse, scale_factor=2, mode="nearest").flatten(2).transpose(1, 2)  # B x L x P
        return self.fine(feats[..., : self.fine_dim]) + coarse


@dataclass(frozen=True)
class HardTraining:
    """How hard attention trains under teacher forcing, in one value (each field is a TrainConfig option).

    ``expected_prob``: share of captions on the expected context (the paper's 0.5); ``location_samples``:
    location paths per sampled caption (leave-one-out baselines from 2).
    """

    expected_prob: float = 0.5
    location_samples: int = 1


STEP_ROWS = 16  # teacher forcing rounds each step's running captions up to a multiple of this


@dataclass
class TrainOut:
    """Teacher-forced outputs, flattened over the valid (caption, step) pairs."""

    logits: torch.Tensor  # N x V
    targets: torch.Tensor  # N
    caption_index: torch.Tensor  # N: which caption each row belongs to
    alpha_sum: torch.Tensor  # B x L: sum over steps of alpha (doubly stochastic regulariser)
    log_alpha_chosen: torch.Tensor  # B: sum_t log alpha_{t, s_t} of the sampled locations (hard)
    log_location: torch.Tensor | None  # N: log alpha_{t, s_t} per (step, caption) row, like targets (hard)
    entropy: torch.Tensor  # B: sum_t H[alpha_t] (hard)
    use_expected: torch.Tensor  # B bool: caption trained on the expected context (hard)
    alphas: list[torch.Tensor]  # per step, b_t x L
    step_index: torch.Tensor | None = None  # N: the step t of each row (hard attention)
    path_of: torch.Tensor | None = None  # B: the caption each location path belongs to (several location samples)


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        P, H, E, V = cfg.proj_dim, cfg.hidden_dim, cfg.embed_dim, cfg.vocab_size
        self.project: nn.Module = (FusedProjection(cfg.fine_dim, cfg.feature_dim, P, cfg.grid) if cfg.features == "fused"
                                   else nn.Linear(cfg.feature_dim, P))
        if cfg.position:  # where a cell is, as the annotations of a fine grid no longer say it by themselves
            self.position_rows = nn.Parameter(torch.randn(cfg.grid, P) * 0.02)
            self.position_cols = nn.Parameter(torch.randn(cfg.grid, P) * 0.02)
        self.attention = Attention(cfg.attention, resolve_score(cfg.score, cfg.attention), P, H, cfg.attention_dim, cfg.grid, cfg.local_sigma)
        if cfg.word_query:  # the query knows the word just read ("blue" -> look at the blue thing next)
            self.query_word = nn.Linear(E, H, bias=False)
        if cfg.sentinel:  # s_t = g_t * tanh(c_{t-1}), g_t = sigmoid(W [h_{t-1}; E y_{t-1}]), projected to P
            self.sentinel_gate = nn.Linear(H + E, H)
            self.sentinel_proj = nn.Linear(H, P)
        self.init_h = nn.Linear(P, H)
        self.init_c = nn.Linear(P, H)
        self.f_beta = nn.Linear(H, 1)  # gating scalar beta_t
        self.embed = nn.Embedding(V, E)
        self.lstm = nn.LSTMCell(E + P, H)
        self.l_h = nn.Linear(H, E)  # deep output: p(y_t) ~ exp(L_o(E y_{t-1} + L_h h_t + L_z z_t))
        self.l_z = nn.Linear(P, E)
        self.l_o = nn.Linear(E, V)
        self.dropout = nn.Dropout(cfg.dropout)

    # --- per-image setup -------------------------------------------------------------------------
    def memory(self, feats: torch.Tensor) -> Memory:
        """B x L x D encoder features -> projected annotations and attention keys."""
        ann = self.project(feats)
        if self.cfg.position:
            g = self.cfg.grid
            pos = (self.position_rows.unsqueeze(1) + self.position_cols.unsqueeze(0)).reshape(g * g, -1)
            ann = ann + pos.to(ann.dtype)  # stays bf16 under autocast: no per-step casts of the whole grid
        keys = self.attention.keys(ann)
        k = self.cfg.glimpse
        if k > 1:  # each cell's value: the mean of its k x k neighbourhood (inside the image); its key stays its own
            g, (B, L, P) = self.cfg.grid, ann.shape
            grid = ann.transpose(1, 2).reshape(B, P, g, g)
            ann = F.avg_pool2d(grid, k, 1, k // 2, count_include_pad=False).reshape(B, P, L).transpose(1, 2).contiguous()
        return Memory(ann, keys)

    def init_state(self, memory: Memory) -> tuple[torch.Tensor, torch.Tensor]:
        """h_0, c_0 of each row from the mean annotation of its image, as in the paper."""
        mean = memory.ann.mean(1)
        h, c = torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))
        if memory.image is None:
            return h, c
        return h.index_select(0, memory.image), c.index_select(0, memory.image)

    # --- one word --------------------------------------------------------------------------------
    def embed_gates(self, words: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings and their share of the LSTM gates (W_ie E y + b): done for all steps at once in training."""
        emb = self.embed(words)
        E = emb.shape[-1]
        return emb, F.linear(emb, self.lstm.weight_ih[:, :E], self.lstm.bias_ih + self.lstm.bias_hh)

    def step(self, h: torch.Tensor, c: torch.Tensor, memory: Memory, emb: torch.Tensor, emb_gates: torch.Tensor, *,
             mode: str = "expect", use_expected: torch.Tensor | None = None,
             generator: torch.Generator | None = None,
             weights: tuple[torch.Tensor, torch.Tensor] | None = None) -> StepOut:
        """Attend with h_{t-1} (and the word E y_{t-1} just read), update the LSTM with [E y_{t-1}; z_t].

        ``emb_gates`` is the E y part of the LSTM gates, precomputed. ``mode`` only matters for hard
        attention: ``sample`` (training, or sampled decoding), ``argmax`` (the most likely location) or
        ``expect`` (the expected context). Rows where ``use_expected`` is true take the expected context
        whatever the mode (the paper's variance reduction during training). With a sentinel, the
        softmax runs over the L cells and one non-visual slot, and alpha keeps the cells' part.
        ``weights``: the LSTM's context and state matrices, transposed, as :meth:`recurrent_weights` gives
        them once for a whole teacher-forced pass (default: read from the LSTM at this step).
        """
        query = h + self.query_word(emb) if self.cfg.word_query else h
        logits = self.attention.logits(memory.scores(self.attention.score, query), query)
        beta = sentinel = None
        if self.cfg.sentinel:
            sentinel = self.sentinel_proj(torch.sigmoid(self.sentinel_gate(torch.cat([h, emb], 1))) * torch.tanh(c))
            s_logit = self.attention.score(self.attention.score.keys(sentinel.unsqueeze(1)), query.unsqueeze(1))[:, 0]
            both = torch.softmax(torch.cat([logits, s_logit], 1), dim=1)
            alpha, beta = both[:, :-1], both[:, -1]
        else:
            alpha = torch.softmax(logits, dim=1)
        location = log_location = None
        if self.cfg.attention == "hard" and mode != "expect":
            where = over_cells(alpha, beta)
            location = hard_sample(where.detach(), mode, generator)
            log_location = torch.log(where.gather(1, location.unsqueeze(1)).squeeze(1).clamp_min(1e-12))
            z = memory.pick(location)
            if use_expected is not None:
                z = torch.where(use_expected.unsqueeze(1), memory.context(where), z)
            if beta is not None:
                z = (1.0 - beta).unsqueeze(1) * z
        else:
            z = memory.context(alpha)
        if beta is not None:
            z = z + beta.unsqueeze(1) * sentinel
        z = torch.sigmoid(self.f_beta(h)) * z
        w_z, w_h = weights or self.recurrent_weights()
        gates = torch.addmm(emb_gates, z, w_z)
        gates = torch.addmm(gates, h, w_h)
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return StepOut(h, c, z, alpha, location, beta, log_location)

    def recurrent_weights(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The LSTM's input weights for the context and its state weights, transposed (P x 4H, H x 4H).

        ``dtype``: cast once here for a whole teacher-forced pass; otherwise autocast would cast the
        context's share, a slice and not a parameter it caches, at every step, and its gradient would
        be scattered back into the whole input matrix at every step as well.
        """
        E = self.cfg.embed_dim
        w_z, w_h = self.lstm.weight_ih[:, E:].t(), self.lstm.weight_hh.t()
        return (w_z, w_h) if dtype is None else (w_z.to(dtype), w_h.to(dtype))

    def logits(self, emb: torch.Tensor, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Deep output p(y_t) ~ exp(L_o(E y_{t-1} + L_h h_t + L_z z_t)); batched over all steps in training."""
        return self.l_o(self.dropout(emb + self.l_h(self.dropout(h)) + self.l_z(z)))

    def next_logits(self, prev: torch.Tensor, h: torch.Tensor, c: torch.Tensor, memory: Memory, **kw) -> tuple[torch.Tensor, StepOut]:
        """One decoding step from the previous word: the path greedy, beam and sampling use."""
        emb, pre = self.embed_gates(prev)
        out = self.step(h, c, memory, emb, pre, **kw)
        return self.logits(emb, out.h, out.z), out

    # --- teacher forcing -------------------------------------------------------------------------
    def forward(self, feats: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor,
                image_index: torch.Tensor | None = None, hard_training: HardTraining = HardTraining()) -> TrainOut:
        """Teacher-forced pass over captions sorted by length (longest first).

        ``captions`` is B x T with <start> ... <end> and padding; ``lengths`` counts tokens including
        both specials. ``feats`` holds one grid per *image*; ``image_index`` maps each caption to its
        image, so an image with five captions is projected once, not five times. At step t only the
        b_t captions still running are computed: the batch shrinks as captions end. Everything that
        does not depend on the recurrence (embeddings, their gate share, the output layer) runs as
        one large matrix product over all steps instead of T small ones.

        Hard attention (``hard_training``) with ``location_samples`` K > 1 runs every caption that samples its
        locations K times, each a separate location path; ``path_of`` maps the paths to their captions,
        so each path can be judged against the others (leave-one-out). Order (longest first) is kept.
        """
        B = captions.shape[0]
        hard = self.cfg.attention == "hard"
        expected_prob, location_samples = hard_training.expected_prob, hard_training.location_samples
        grids = self.memory(feats)
        if image_index is None:
            image_index = torch.arange(B, device=feats.device)
        use_expected = (torch.rand(B, device=feats.device) < expected_prob) if (hard and self.training) else None
        path_of = None
        if use_expected is not None and location_samples > 1:
            copies = torch.where(use_expected, 1, location_samples)
            path_of = torch.repeat_interleave(torch.arange(B, device=feats.device), copies)
            captions, lengths = captions.index_select(0, path_of), lengths.index_select(0, path_of)
            image_index, use_expected = image_index.index_select(0, path_of), use_expected.index_select(0, path_of)
            B = captions.shape[0]
        # the captions read their image's grid in place; images numbered by their first (longest) caption, so
        # the images still running at a step are the first ones
        first = torch.full((grids.ann.shape[0],), B, dtype=torch.long, device=feats.device)
        first = first.scatter_reduce(0, image_index, torch.arange(B, device=feats.device), reduce="amin")
        by_first = torch.argsort(first)
        renumber = torch.empty_like(by_first)
        renumber[by_first] = torch.arange(len(by_first), device=feats.device)
        ann = grids.ann.index_select(0, by_first)
        keys = ann if grids.keys is grids.ann else grids.keys.index_select(0, by_first)
        per_image = Memory.for_rows(ann, keys, renumber[image_index])
        h, c = self.init_state(per_image)
        steps = lengths - 1  # predictions per caption
        mode = "sample" if self.training else self.cfg.hard_mode
        T = int(steps.max())
        emb, pre = self.embed_gates(captions[:, :T])  # B x T x E, B x T x 4H
        # one tensor per step: each step's gradient is stacked once at the end, where slicing a step out of
        # B x T x ... would allocate and add a whole B x T x ... gradient at every step
        emb_t, pre_t = emb.unbind(1), pre.unbind(1)
        weights = self.recurrent_weights(torch.get_autocast_dtype(feats.device.type)
                                         if torch.is_autocast_enabled(feats.device.type) else None)
        hs, zs, embs, targets, index, alphas, log_locs, step_index = [], [], [], [], [], [], [], []
        log_chosen = feats.new_zeros(B)
        ent = feats.new_zeros(B)
        alpha_sum = feats.new_zeros(B, grids.ann.shape[1])
        batch_sizes = (steps.unsqueeze(0) > torch.arange(T, device=steps.device).unsqueeze(1)).sum(1)
        for t, b in enumerate(batch_sizes.tolist()):
            # the running captions read their images' grids in place (Memory.scores): nothing the size of a
            # grid is copied per caption. The step runs on ``run`` >= b rows, b rounded up to a multiple of
            # STEP_ROWS: the finished captions it carries along are dropped from every output, and the
            # tensors a batch allocates then come in a few sizes that repeat from batch to batch, which the
            # C heap can reuse instead of fragmenting (RssAnon grew past 4 GB over a COCO-sized epoch).
            run = min(B, -(-b // STEP_ROWS) * STEP_ROWS)
            memory = per_image.first(run)
            out = self.step(h[:run], c[:run], memory, emb_t[t][:run], pre_t[t][:run], mode=mode,
                            use_expected=None if use_expected is None else use_expected[:run], weights=weights)
            h, c = out.h, out.c
            hs.append(out.h[:b])
            zs.append(out.z[:b])
            embs.append(emb_t[t][:b])
            targets.append(captions[:b, t + 1])
            index.append(torch.arange(b, device=feats.device))
            if hard:
                step_index.append(torch.full((b,), t, dtype=torch.long, device=feats.device))
            alpha = out.alpha[:b]
            alphas.append(alpha)
            alpha_sum = alpha_sum + F.pad(alpha, (0, 0, 0, B - b))
            if hard and out.log_location is not None:
                log_locs.append(out.log_location[:b])
                log_chosen = log_chosen + F.pad(out.log_location[:b], (0, B - b))
                where = over_cells(alpha, None if out.sentinel is None else out.sentinel[:b])
                ent = ent + F.pad(entropy(where), (0, B - b))
        return TrainOut(
            logits=self.logits(torch.cat(embs), torch.cat(hs), torch.cat(zs)), targets=torch.cat(targets),
            caption_index=torch.cat(index), alpha_sum=alpha_sum, log_alpha_chosen=log_chosen, entropy=ent,
            use_expected=use_expected if use_expected is not None else torch.zeros(B, dtype=torch.bool),
            alphas=alphas, log_location=torch.cat(log_locs) if log_locs else None,
            step_index=torch.cat(step_index) if step_index else None, path_of=path_of,
        )
