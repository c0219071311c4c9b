"""The training objective: cross-entropy, doubly stochastic attention, and REINFORCE for hard attention."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..model.decoder import TrainOut


@dataclass
class LossTerms:
    total: torch.Tensor
    ce: float  # mean per-token cross-entropy
    doubly_stochastic: float
    reinforce: float
    entropy: float
    reward: float  # mean log p(y | s, a) per caption (hard)
    word_rewards: tuple[torch.Tensor, torch.Tensor] | None = None  # token estimator: per-word sums, counts (V)



def doubly_stochastic(alpha_sum: torch.Tensor) -> torch.Tensor:
    """Per caption, sum_i (1 - sum_t alpha_ti)^2: how far each cell's total attention is from 1 (the paper's term)."""
    return ((1.0 - alpha_sum) ** 2).sum(1)


def location_rewards(logp: torch.Tensor, out: TrainOut, estimator: str) -> torch.Tensor:
    """Per (step, path) row, the reward its sampled location is judged by.

    ``token``: log p(y_t), the word the location was chosen for. ``paper``: log p(y) of the whole
    caption, the same for every location of a path.
    """
    if estimator == "token":
        return logp
    B, T = out.alpha_sum.shape[0], int(out.step_index.max()) + 1
    per_path = logp.new_zeros(B, T).index_put((out.caption_index, out.step_index), logp)
    per_path = per_path.sum(1, keepdim=True).expand(B, T)
    return per_path[out.caption_index, out.step_index]


def leave_one_out(values: torch.Tensor, key: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
    """For each row, the mean of ``values`` over the *other* live rows with the same ``key``.

    Rows of one key are the K location paths of one caption at one step: each path's baseline is what
    the others scored, which never includes the path itself (that would bias the gradient). NaN where
    no other live row shares the key.
    """
    live = live.to(values.dtype)
    n = int(key.max()) + 1
    sums = values.new_zeros(n).index_add(0, key, values * live)
    counts = values.new_zeros(n).index_add(0, key, live)
    others = counts[key] - live
    return torch.where(others > 0, (sums[key] - values * live) / others.clamp_min(1), torch.full_like(values, float("nan")))


def _moving_baseline(out: TrainOut, estimator: str, baseline: float | None, word_baseline: torch.Tensor | None,
                     reward: torch.Tensor) -> torch.Tensor:
    """Per row, the moving-average baseline of an estimator (NaN where it has no history yet).

    ``token``: the word's own moving log p. ``paper``: one moving average of the caption log p.
    """
    if estimator == "token":
        if word_baseline is None:
            return torch.full_like(reward, float("nan"))
        return word_baseline.to(reward.device)[out.targets].to(reward.dtype)
    return torch.full_like(reward, float("nan") if baseline is None else baseline)


def _multi_sample_reinforce(out: TrainOut, logp: torch.Tensor, *, estimator: str, baseline: float | None,
                            word_baseline: torch.Tensor | None, path_weight: torch.Tensor,
                            n_captions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE over the sampled location paths: sum of weighted (reward - baseline) log alpha_{t,s_t}.

    The baseline is leave-one-out over the other paths of the same caption at the same step when
    there are several (``out.path_of``), else the estimator's moving average. Returns the REINFORCE
    loss and the entropy bonus (a caption's K paths share weight 1). ``paper`` averages them over
    captions, as the paper does; ``token`` over words, like the cross-entropy: summed over
    a caption's ~12 words, REINFORCE's noise reaches the LSTM and embeddings with several times the
    cross-entropy's gradient norm, and clipping the total then shrinks the words' own gradient
    (BENCHMARKS.md, hard attention from scratch).
    """
    r = location_rewards(logp, out, estimator)
    sampled = (~out.use_expected).to(r.device)
    row_sampled = sampled[out.caption_index]
    b = torch.full_like(r, float("nan"))
    if out.path_of is not None:
        T = int(out.step_index.max()) + 1
        b = leave_one_out(r, out.path_of[out.caption_index] * T + out.step_index, row_sampled)
    b = torch.where(torch.isnan(b), _moving_baseline(out, estimator, baseline, word_baseline, r), b)
    b = torch.where(torch.isnan(b), r, b)  # no history and no other path: no advantage
    w = path_weight[out.caption_index] * row_sampled.to(r.dtype)
    per = n_captions if estimator == "paper" else float(path_weight[out.caption_index].sum())
    rl = -((r - b) * w * out.log_location.float()).sum() / per
    ent = (out.entropy * path_weight * sampled.to(out.entropy.dtype)).sum() / per
    return rl, ent


def caption_loss(out: TrainOut, *, alpha_c: float, hard: bool, baseline: float | None,
                 entropy_weight: float = 0.01, label_smoothing: float = 0.0, estimator: str = "paper",
                 word_baseline: torch.Tensor | None = None) -> LossTerms:
    """Loss to minimise for one batch.

    For hard attention the attention parameters get their gradient from the REINFORCE estimator of
    the variational lower bound: (log p(y|s,a) - b) * grad log p(s|a), plus an entropy bonus. Captions
    trained on the expected context (probability 0.5 each) backpropagate through alpha directly, so
    their REINFORCE term is zero.

    ``estimator``: ``paper`` rewards every location of a caption with the whole caption's log p minus a
    moving average ``baseline``; ``token`` rewards the location s_t with log p(y_t | s_t, ...) of the word
    it produced, minus ``word_baseline[y_t]`` (a moving average of that word's log p): the location is
    judged by the word it was chosen for, and how hard the word is does not enter the advantage.
    With several location paths per caption (``out.path_of``) every estimator's baseline is the
    leave-one-out mean of the other paths, and each caption's paths share one caption's weight.
    """
    logp_all = F.log_softmax(out.logits.float(), dim=1)
    ce_tok = -logp_all.gather(1, out.targets.unsqueeze(1)).squeeze(1)  # the true NLL: logged, and REINFORCE's reward
    B = out.alpha_sum.shape[0]
    multi = hard and out.log_location is not None and (out.path_of is not None or estimator != "paper")
    path_weight = out.alpha_sum.new_ones(B, dtype=torch.float32)
    if out.path_of is not None:  # each caption counts once, however many paths it ran
        path_weight = 1.0 / torch.bincount(out.path_of).to(torch.float32)[out.path_of]
    row_weight = path_weight[out.caption_index] if out.path_of is not None else None
    ce = ce_tok.mean() if row_weight is None else (ce_tok * row_weight).sum() / row_weight.sum()
    if label_smoothing:  # (1 - eps) NLL + eps x cross-entropy against the uniform distribution
        smooth = -logp_all.mean(1)
        smooth = smooth.mean() if row_weight is None else (smooth * row_weight).sum() / row_weight.sum()
        fit = (1.0 - label_smoothing) * ce + label_smoothing * smooth
    else:
        fit = ce
    ds = alpha_c * doubly_stochastic(out.alpha_sum).mean() if alpha_c else out.alpha_sum.new_zeros(())
    total = fit + ds
    rl = ent = reward = torch.zeros((), device=ce.device)
    word_rewards = None
    if multi:
        n_captions = float(path_weight.sum())
        rl, ent = _multi_sample_reinforce(out, -ce_tok.detach(), estimator=estimator, baseline=baseline,
                                          word_baseline=word_baseline, path_weight=path_weight, n_captions=n_captions)
        total = total + rl - entropy_weight * ent
        per_path = -torch.zeros(B, device=ce.device).index_add(0, out.caption_index, ce_tok.detach())
        reward = (per_path * path_weight).sum() / n_captions
        if estimator == "token":
            word_rewards = _word_rewards(-ce_tok.detach(), out.targets, out.logits.shape[1])
    elif hard:
        logp = -torch.zeros(B, device=ce.device).index_add(0, out.caption_index, ce_tok.detach())
        reward = logp.mean()
        b = float(reward) if baseline is None else baseline  # first batch: no history yet
        sampled = (~out.use_expected).to(ce.dtype)
        advantage = (logp - b) * sampled
        rl = -(advantage * out.log_alpha_chosen).mean()
        ent = (out.entropy * sampled).mean()
        total = total + rl - entropy_weight * ent
    return LossTerms(total, ce.item(), ds.item(), float(rl.detach()), float(ent.detach()), float(reward), word_rewards)


def _word_rewards(r: torch.Tensor, targets: torch.Tensor, V: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-word sums and counts of log p in a batch, for the token estimator's per-word moving baseline."""
    return (torch.zeros(V, dtype=torch.float64).index_add(0, targets.cpu(), r.cpu().double()),
            torch.bincount(targets.cpu(), minlength=V).double())


#: decay of the moving-average REINFORCE baselines (the paper's b <- 0.9 b + 0.1 log p)
BASELINE_DECAY = 0.9


def update_baseline(baseline: float | None, reward: float, decay: float = BASELINE_DECAY) -> float:
    """Moving-average baseline b <- decay * b + (1 - decay) * log p(y|s,a); starts at the first reward."""
    return reward if baseline is None else decay * baseline + (1.0 - decay) * reward


def update_word_baseline(baseline: torch.Tensor | None, sums: torch.Tensor, counts: torch.Tensor,
                         decay: float = BASELINE_DECAY) -> torch.Tensor:
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
