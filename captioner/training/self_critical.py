"""Self-critical sequence training (SCST): fine-tune a captioner on the metric it is judged by.

Cross-entropy trains each word given the *reference* prefix, while at test time the model continues
its *own* prefix and is scored by CIDEr/BLEU. SCST (Rennie et al., CVPR 2017) closes that gap with
REINFORCE: sample captions from the model, reward each by its CIDEr-D against the image's references,
and raise the log-probability of samples that beat a baseline. The baseline is the mean reward of the
other samples of the same image (Luo, "A Better Variant of Self-Critical Sequence Training", 2020),
which needs no extra greedy decode. For hard attention the sampled locations are part of the sampled
caption, so their log-probabilities get the same advantage: REINFORCE on words and locations together.

Sampling runs through :meth:`Decoder.next_logits`, the step every other path uses, with gradients on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..metrics.bleu import SentenceBleu
from ..metrics.cider import CiderD
from ..model.decoder import Decoder
from .losses import doubly_stochastic
from ..metrics.meteor import SentenceMeteor
from ..data.vocab import END, Vocab, tokenize


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
    memory = decoder.memory(feats).select(torch.arange(B, device=device).repeat_interleave(per_image))
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


@dataclass
class ScstTerms:
    total: torch.Tensor
    reward: float  # mean CIDEr-D of the samples
    policy: float  # the policy-gradient term
    doubly_stochastic: float
    nll: float  # mean negative log-probability per sampled token


def scst_loss(samples: Samples, rewards: torch.Tensor, *, alpha_c: float = 0.0, ds_target: str = "one") -> ScstTerms:
    """REINFORCE with the leave-one-out baseline, normalised per sampled token.

    ``rewards`` (N) are the samples' CIDEr-D scores. Each sample's advantage is its reward minus the
    mean reward of the other samples of its image, so an image whose samples are all equally good
    teaches nothing, whatever its absolute score.
    """
    n = samples.per_image
    if n < 2:
        raise ValueError("SCST's baseline needs at least 2 samples per image")
    r = rewards.to(samples.log_prob.device, torch.float32).view(-1, n)
    baseline = (r.sum(1, keepdim=True) - r) / (n - 1)
    advantage = (r - baseline).reshape(-1)
    tokens = samples.lengths.sum().clamp_min(1).float()
    policy = -(advantage * samples.log_prob).sum() / tokens
    ds = alpha_c * doubly_stochastic(samples.alpha_sum, samples.lengths, ds_target).mean()
    return ScstTerms(policy + ds, float(r.mean()), float(policy.detach()), float(ds.detach()),
                     float(-samples.log_prob.detach().sum() / tokens))


class CaptionReward:
    """The reward of a sampled caption: CIDEr-D, plus ``bleu_weight`` x sentence BLEU-4 and
    ``meteor_weight`` x sentence METEOR when asked for.

    ``references`` holds the raw captions of each training image. Every caption, reference or sample,
    ends with the word ``<end>`` for CIDEr-D: then how a caption ends counts, and a sample that stops
    mid-phrase ("a dog runs with a") loses the n-grams a complete one would earn. BLEU-4's brevity
    penalty holds captions near the references' length, which CIDEr-D alone lets shrink; METEOR pays
    for recall and for words that match a reference's only through a stem or a synonym.
    """

    def __init__(self, references: Sequence[Sequence[str]], bleu_weight: float = 0.0,
                 meteor_weight: float = 0.0) -> None:
        tokens = [[tokenize(c) for c in refs] for refs in references]
        self.cider = CiderD([[t + [END] for t in refs] for refs in tokens])
        self.bleu = SentenceBleu(tokens) if bleu_weight else None
        self.meteor = SentenceMeteor(tokens) if meteor_weight else None
        self.bleu_weight, self.meteor_weight = bleu_weight, meteor_weight

    def __call__(self, images: Sequence[int], samples: Samples, vocab: Vocab) -> torch.Tensor:
        """The reward of each sample (``images``: the training-image index of each sampled image)."""
        owners = [i for i in images for _ in range(samples.per_image)]
        words = samples.words(vocab)
        reward = self.cider.scores(owners, [w + [END] for w in words])
        if self.bleu is not None:
            reward = reward + self.bleu_weight * self.bleu.scores(owners, words)
        if self.meteor is not None:
            reward = reward + self.meteor_weight * self.meteor.scores(owners, words)
        return torch.from_numpy(reward)

    def close(self) -> None:
        """Release what scoring holds (METEOR's JVM)."""
        if self.meteor is not None:
            self.meteor.close()


__all__ = ["Samples", "sample_captions", "ScstTerms", "scst_loss", "CaptionReward"]
