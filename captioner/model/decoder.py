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

from .attention import Attention, entropy, gather_context, hard_sample, pick_context
from .config import ModelConfig, resolve_score


@dataclass
class Memory:
    """Per-image tensors computed once and read at every step."""

    ann: torch.Tensor  # B x L x P projected annotations
    keys: torch.Tensor  # B x L x * attention keys (score-specific precomputation)

    def select(self, index: torch.Tensor) -> "Memory":
        """Rows ``index`` (beam search expands and reorders images)."""
        return Memory(self.ann.index_select(0, index), self.keys.index_select(0, index))


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
        return Memory(ann, self.attention.keys(ann))

    def init_state(self, memory: Memory) -> tuple[torch.Tensor, torch.Tensor]:
        """h_0, c_0 from the mean annotation, as in the paper."""
        mean = memory.ann.mean(1)
        return torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))

    # --- one word --------------------------------------------------------------------------------
    def embed_gates(self, words: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings and their share of the LSTM gates (W_ie E y + b): done for all steps at once in training."""
        emb = self.embed(words)
        E = emb.shape[-1]
        return emb, F.linear(emb, self.lstm.weight_ih[:, :E], self.lstm.bias_ih + self.lstm.bias_hh)

    def step(self, h: torch.Tensor, c: torch.Tensor, memory: Memory, emb: torch.Tensor, emb_gates: torch.Tensor, *,
             mode: str = "expect", use_expected: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> StepOut:
        """Attend with h_{t-1} (and the word E y_{t-1} just read), update the LSTM with [E y_{t-1}; z_t].

        ``emb_gates`` is the E y part of the LSTM gates, precomputed. ``mode`` only matters for hard
        attention: ``sample`` (training, or sampled decoding), ``argmax`` (the most likely location) or
        ``expect`` (the expected context). Rows where ``use_expected`` is true take the expected context
        whatever the mode (the paper's variance reduction during training). With a sentinel, the
        softmax runs over the L cells and one non-visual slot, and alpha keeps the cells' part.
        """
        query = h + self.query_word(emb) if self.cfg.word_query else h
        logits = self.attention.logits(memory.keys, query)
        beta = sentinel = None
        if self.cfg.sentinel:
            sentinel = self.sentinel_proj(torch.sigmoid(self.sentinel_gate(torch.cat([h, emb], 1))) * torch.tanh(c))
            s_logit = self.attention.score(self.attention.score.keys(sentinel.unsqueeze(1)), query)  # B x 1
            weights = torch.softmax(torch.cat([logits, s_logit], 1), dim=1)
            alpha, beta = weights[:, :-1], weights[:, -1]
        else:
            alpha = torch.softmax(logits, dim=1)
        location = log_location = None
        if self.cfg.attention == "hard" and mode != "expect":
            where = over_cells(alpha, beta)
            location = hard_sample(where.detach(), mode, generator)
            log_location = torch.log(where.gather(1, location.unsqueeze(1)).squeeze(1).clamp_min(1e-12))
            z = pick_context(memory.ann, location)
            if use_expected is not None:
                z = torch.where(use_expected.unsqueeze(1), gather_context(memory.ann, where), z)
            if beta is not None:
                z = (1.0 - beta).unsqueeze(1) * z
        else:
            z = gather_context(memory.ann, alpha)
        if beta is not None:
            z = z + beta.unsqueeze(1) * sentinel
        z = torch.sigmoid(self.f_beta(h)) * z
        E = self.cfg.embed_dim
        gates = torch.addmm(emb_gates, z, self.lstm.weight_ih[:, E:].t())
        gates = torch.addmm(gates, h, self.lstm.weight_hh.t())
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return StepOut(h, c, z, alpha, location, beta, log_location)

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
        per_image = self.memory(feats)
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
        h, c = self.init_state(per_image)
        h, c = h.index_select(0, image_index), c.index_select(0, image_index)
        steps = lengths - 1  # predictions per caption
        mode = "sample" if self.training else self.cfg.hard_mode
        T = int(steps.max())
        emb, pre = self.embed_gates(captions[:, :T])  # B x T x E, B x T x 4H
        hs, zs, embs, targets, index, alphas, log_locs, step_index = [], [], [], [], [], [], [], []
        log_chosen = feats.new_zeros(B)
        ent = feats.new_zeros(B)
        alpha_sum = feats.new_zeros(B, per_image.ann.shape[1])
        batch_sizes = (steps.unsqueeze(0) > torch.arange(T, device=steps.device).unsqueeze(1)).sum(1)
        for t, b in enumerate(batch_sizes.tolist()):
            # each step gathers the running captions' images from the per-image memory: its backward adds
            # into B_images x L x A, where slicing a per-caption copy would zero-fill B x L x A every step.
            # The step runs on ``run`` >= b rows, b rounded up to a multiple of STEP_ROWS: the finished
            # captions it carries along are dropped from every output, and the tensors a batch allocates
            # then come in a few sizes that repeat from batch to batch, which the C heap can reuse instead
            # of fragmenting (RssAnon grew past 4 GB over a COCO-sized epoch with one size per b).
            run = min(B, -(-b // STEP_ROWS) * STEP_ROWS)
            memory = per_image.select(image_index[:run])
            out = self.step(h[:run], c[:run], memory, emb[:run, t], pre[:run, t], mode=mode,
                            use_expected=None if use_expected is None else use_expected[:run])
            h, c = out.h, out.c
            hs.append(out.h[:b])
            zs.append(out.z[:b])
            embs.append(emb[:b, t])
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
