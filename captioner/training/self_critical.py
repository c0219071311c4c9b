"""Self-critical sequence training (SCST): fine-tune a captioner on the metric it is judged by.

Cross-entropy trains each word given the *reference* prefix, while at test time the model continues
its *own* prefix and is scored by CIDEr/BLEU. SCST (Rennie et al., CVPR 2017) closes that gap with
REINFORCE: sample captions from the model, reward each by its CIDEr-D against the image's references,
and raise the log-probability of samples that beat a baseline. The baseline is the mean reward of the
other samples of the same image (Luo, "A Better Variant of Self-Critical Sequence Training", 2020),
which needs no extra greedy decode. For hard attention the sampled locations are part of the sampled
caption, so their log-probabilities get the same advantage: REINFORCE on words and locations together.

The samples come from :mod:`captioner.model.sampling`, the decoder step every other path uses, with gradients on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..metrics.cider import CiderD
from ..model.sampling import Samples
from .losses import doubly_stochastic
from ..metrics.meteor import SentenceMeteor
from ..data.vocab import END, Vocab, tokenize


@dataclass
class ScstTerms:
    total: torch.Tensor
    reward: float  # mean CIDEr-D of the samples
    policy: float  # the policy-gradient term
    doubly_stochastic: float
    nll: float  # mean negative log-probability per sampled token


def scst_loss(samples: Samples, rewards: torch.Tensor, *, alpha_c: float = 0.0) -> ScstTerms:
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
    ds = alpha_c * doubly_stochastic(samples.alpha_sum).mean()
    return ScstTerms(policy + ds, float(r.mean()), float(policy.detach()), float(ds.detach()),
                     float(-samples.log_prob.detach().sum() / tokens))


class CaptionReward:
    """The reward of a sampled caption: CIDEr-D, plus ``meteor_weight`` x sentence METEOR when asked for.

    ``references`` holds the raw captions of each training image. Every caption, reference or sample,
    ends with the word ``<end>`` for CIDEr-D: then how a caption ends counts, and a sample that stops
    mid-phrase ("a dog runs with a") loses the n-grams a complete one would earn. METEOR pays for
    recall and for words that match a reference's only through a stem or a synonym.
    """

    def __init__(self, references: Sequence[Sequence[str]], meteor_weight: float = 0.0) -> None:
        tokens = [[tokenize(c) for c in refs] for refs in references]
        self.cider = CiderD([[t + [END] for t in refs] for refs in tokens])
        self.meteor = SentenceMeteor(tokens) if meteor_weight else None
        self.meteor_weight = meteor_weight

    def __call__(self, images: Sequence[int], samples: Samples, vocab: Vocab) -> torch.Tensor:
        """The reward of each sample (``images``: the training-image index of each sampled image)."""
        owners = [i for i in images for _ in range(samples.per_image)]
        words = samples.words(vocab)
        reward = self.cider.scores(owners, [w + [END] for w in words])
        if self.meteor is not None:
            reward = reward + self.meteor_weight * self.meteor.scores(owners, words)
        return torch.from_numpy(reward)

    def close(self) -> None:
        """Release what scoring holds (METEOR's JVM)."""
        if self.meteor is not None:
            self.meteor.close()


__all__ = ["ScstTerms", "scst_loss", "CaptionReward"]
