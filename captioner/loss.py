"""The training objective: cross-entropy, doubly stochastic attention, and REINFORCE for hard attention."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import HARD_ESTIMATORS
from .decoder import TrainOut


@dataclass
class LossTerms:
    total: torch.Tensor
    ce: float  # mean per-token cross-entropy
    doubly_stochastic: float
    reinforce: float
    entropy: float
    reward: float  # mean log p(y | s, a) per caption (hard)
    word_rewards: tuple[torch.Tensor, torch.Tensor] | None = None  # token estimator: per-word sums, counts (V)



DS_TARGETS = ("one", "length")


def doubly_stochastic(alpha_sum: torch.Tensor, steps: torch.Tensor, target: str = "one") -> torch.Tensor:
    """Per caption, sum_i (tau - sum_t alpha_ti)^2: how far each cell's total attention is from tau.

    ``one``: tau = 1, the paper's form, which assumes many more cells than words (196 cells, ~10 words);
    with L = 49 its floor is about L (1 - T/L)^2 and it pushes every cell, background included, towards
    the same total. ``length``: tau = T/L for a caption of T words, the total attention T spread evenly,
    so the term is zero for a caption that covers the grid evenly and measures only concentration.
    """
    if target not in DS_TARGETS:
        raise ValueError(f"unknown doubly stochastic target {target!r}; choose one of {', '.join(DS_TARGETS)}")
    tau = 1.0 if target == "one" else (steps.to(alpha_sum.dtype) / alpha_sum.shape[1]).unsqueeze(1)
    return ((tau - alpha_sum) ** 2).sum(1)


def caption_loss(out: TrainOut, *, alpha_c: float, hard: bool, baseline: float | None,
                 reinforce_weight: float = 1.0, entropy_weight: float = 0.01, label_smoothing: float = 0.0,
                 ds_target: str = "one", estimator: str = "paper", word_baseline: torch.Tensor | None = None) -> LossTerms:
    """Loss to minimise for one batch.

    For hard attention the attention parameters get their gradient from the REINFORCE estimator of
    the variational lower bound: (log p(y|s,a) - b) * grad log p(s|a), plus an entropy bonus. Captions
    trained on the expected context (probability 0.5 each) backpropagate through alpha directly, so
    their REINFORCE term is zero.

    ``estimator``: ``paper`` rewards every location of a caption with the whole caption's log p minus a
    moving average ``baseline``; ``token`` rewards the location s_t with log p(y_t | s_t, ...) of the word
    it produced, minus ``word_baseline[y_t]`` (a moving average of that word's log p): the location is
    judged by the word it was chosen for, and how hard the word is does not enter the advantage.
    """
    logp_all = F.log_softmax(out.logits.float(), dim=1)
    ce_tok = -logp_all.gather(1, out.targets.unsqueeze(1)).squeeze(1)  # the true NLL: logged, and REINFORCE's reward
    ce = ce_tok.mean()
    if label_smoothing:  # (1 - eps) NLL + eps x cross-entropy against the uniform distribution
        fit = (1.0 - label_smoothing) * ce + label_smoothing * -logp_all.mean(1).mean()
    else:
        fit = ce
    steps = torch.bincount(out.caption_index, minlength=out.alpha_sum.shape[0])
    ds = alpha_c * doubly_stochastic(out.alpha_sum, steps, ds_target).mean() if alpha_c else out.alpha_sum.new_zeros(())
    total = fit + ds
    rl = ent = reward = torch.zeros((), device=ce.device)
    word_rewards = None
    if hard and estimator == "token" and out.log_location is not None:
        r = -ce_tok.detach()
        V = out.logits.shape[1]
        b_w = word_baseline.to(r.device)[out.targets] if word_baseline is not None else torch.full_like(r, float("nan"))
        b_w = torch.where(torch.isnan(b_w), r, b_w)  # a word never seen yet: no advantage
        sampled = (~out.use_expected).to(r.device)[out.caption_index].to(r.dtype)
        B = out.alpha_sum.shape[0]
        rl = -((r - b_w) * sampled * out.log_location.float()).sum() / B * reinforce_weight
        ent = (out.entropy * (~out.use_expected).to(ce.dtype)).mean()
        total = total + rl - entropy_weight * ent
        reward = -torch.zeros(B, device=ce.device).index_add(0, out.caption_index, ce_tok.detach()).mean()
        word_rewards = (torch.zeros(V, dtype=torch.float64).index_add(0, out.targets.cpu(), r.cpu().double()),
                        torch.bincount(out.targets.cpu(), minlength=V).double())
    elif hard:
        B = out.alpha_sum.shape[0]
        logp = -torch.zeros(B, device=ce.device).index_add(0, out.caption_index, ce_tok.detach())
        reward = logp.mean()
        b = float(reward) if baseline is None else baseline  # first batch: no history yet
        sampled = (~out.use_expected).to(ce.dtype)
        advantage = (logp - b) * sampled
        rl = -(advantage * out.log_alpha_chosen).mean() * reinforce_weight
        ent = (out.entropy * sampled).mean()
        total = total + rl - entropy_weight * ent
    return LossTerms(total, ce.item(), ds.item(), float(rl.detach()), float(ent.detach()), float(reward), word_rewards)


def update_baseline(baseline: float | None, reward: float, decay: float) -> float:
    """Moving-average baseline b <- decay * b + (1 - decay) * log p(y|s,a); starts at the first reward."""
    return reward if baseline is None else decay * baseline + (1.0 - decay) * reward


def update_word_baseline(baseline: torch.Tensor | None, sums: torch.Tensor, counts: torch.Tensor,
                         decay: float) -> torch.Tensor:
    """Per-word moving average of log p(y_t): b_w <- decay b_w + (1 - decay) mean_batch(w); a word's first
    batch sets it, words absent from the batch keep theirs."""
    if baseline is None:
        baseline = torch.full_like(sums, float("nan"))
    seen = counts > 0
    mean = sums / counts.clamp_min(1)
    fresh = seen & torch.isnan(baseline)
    out = baseline.clone()
    out[seen] = decay * baseline[seen] + (1.0 - decay) * mean[seen]
    out[fresh] = mean[fresh]
    return out
