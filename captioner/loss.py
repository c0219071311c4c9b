"""The training objective: cross-entropy, doubly stochastic attention, and REINFORCE for hard attention."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .decoder import TrainOut


@dataclass
class LossTerms:
    total: torch.Tensor
    ce: float  # mean per-token cross-entropy
    doubly_stochastic: float
    reinforce: float
    entropy: float
    reward: float  # mean log p(y | s, a) per caption (hard)


def caption_loss(out: TrainOut, *, alpha_c: float, hard: bool, baseline: float | None,
                 reinforce_weight: float = 1.0, entropy_weight: float = 0.01, label_smoothing: float = 0.0) -> LossTerms:
    """Loss to minimise for one batch.

    For hard attention the attention parameters get their gradient from the REINFORCE estimator of
    the variational lower bound: (log p(y|s,a) - b) * grad log p(s|a), plus an entropy bonus. Captions
    trained on the expected context (probability 0.5 each) backpropagate through alpha directly, so
    their REINFORCE term is zero.
    """
    logp_all = F.log_softmax(out.logits.float(), dim=1)
    ce_tok = -logp_all.gather(1, out.targets.unsqueeze(1)).squeeze(1)  # the true NLL: logged, and REINFORCE's reward
    ce = ce_tok.mean()
    if label_smoothing:  # (1 - eps) NLL + eps x cross-entropy against the uniform distribution
        fit = (1.0 - label_smoothing) * ce + label_smoothing * -logp_all.mean(1).mean()
    else:
        fit = ce
    ds = alpha_c * ((1.0 - out.alpha_sum) ** 2).sum(1).mean()
    total = fit + ds
    rl = ent = reward = torch.zeros((), device=ce.device)
    if hard:
        B = out.alpha_sum.shape[0]
        logp = -torch.zeros(B, device=ce.device).index_add(0, out.caption_index, ce_tok.detach())
        reward = logp.mean()
        b = float(reward) if baseline is None else baseline  # first batch: no history yet
        sampled = (~out.use_expected).to(ce.dtype)
        advantage = (logp - b) * sampled
        rl = -(advantage * out.log_alpha_chosen).mean() * reinforce_weight
        ent = (out.entropy * sampled).mean()
        total = total + rl - entropy_weight * ent
    return LossTerms(total, ce.item(), ds.item(), float(rl.detach()), float(ent.detach()), float(reward))


def update_baseline(baseline: float | None, reward: float, decay: float) -> float:
    """Moving-average baseline b <- decay * b + (1 - decay) * log p(y|s,a); starts at the first reward."""
    return reward if baseline is None else decay * baseline + (1.0 - decay) * reward
