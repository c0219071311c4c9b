"""The loss of one training batch, for each objective: cross-entropy or self-critical.

Each returns the loss to minimise, the scalars to log, and how many captions it trained on; the
training loop around them (optimizer, clipping, averaging, logging) is the same for both.
"""

from __future__ import annotations

from typing import Any

import torch

from .batches import Pairs, caption_tensors, image_tensors
from .boxes import box_loss
from .config import TrainConfig
from .features import FeatureStore
from .loss import caption_loss
from .model import CaptionModel
from .scst import CaptionReward, scst_loss


def xe_terms(net: torch.nn.Module, hard: bool, pairs: Pairs, images: torch.Tensor, store: FeatureStore,
             cfg: TrainConfig, baseline: float | None, device: torch.device,
             word_baseline: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, Any], int]:
    """Cross-entropy (+ REINFORCE for hard attention, against ``baseline``) on the reference captions of a batch."""
    feats = image_tensors(pairs, images, store, device)
    tokens, lengths, image_index = caption_tensors(pairs, images, device)
    out = net(feats, tokens, lengths, live=store.live, expected_prob=cfg.expected_prob, image_index=image_index,
              location_samples=cfg.location_samples if hard else 1, gate_from_expected=cfg.gate_from_expected)
    terms = caption_loss(out, alpha_c=cfg.alpha_c, hard=hard, baseline=baseline,
                         reinforce_weight=cfg.reinforce_weight, entropy_weight=cfg.entropy_weight,
                         label_smoothing=cfg.label_smoothing, ds_target=cfg.ds_target, estimator=cfg.hard_estimator,
                         word_baseline=word_baseline)
    logs: dict[str, Any] = {"ce": terms.ce, "ds": terms.doubly_stochastic, "reinforce": terms.reinforce,
                            "log_p": terms.reward}
    if terms.word_rewards is not None:
        logs["word_rewards"] = terms.word_rewards
    total = terms.total
    if pairs.boxes is not None and cfg.box_weight > 0:
        alphas = torch.cat(out.alphas)  # N x L, rows in the order of out.targets
        gamma, rows = pairs.boxes.targets(images.tolist(), out.targets, image_index[out.caption_index], alphas.shape[1])
        box = box_loss(alphas[rows.to(alphas.device)], gamma)
        total = total + cfg.box_weight * box
        logs["box"] = float(box.detach())
    return total, logs, len(lengths)


def scst_terms(net: torch.nn.Module, model: CaptionModel, reward: CaptionReward, pairs: Pairs, images: torch.Tensor,
               store: FeatureStore, cfg: TrainConfig, device: torch.device) -> tuple[torch.Tensor, dict[str, float], int]:
    """Self-critical loss: sample captions of each image, reward them against its references.

    With ``cfg.scst_xe_weight`` the cross-entropy on the batch's reference captions is added, which
    anchors the model to human phrasing while it chases the reward.
    """
    feats = image_tensors(pairs, images, store, device)
    samples = net(feats, live=store.live, samples=cfg.scst_samples, max_len=cfg.max_len)
    terms = scst_loss(samples, reward(images.tolist(), samples, model.vocab), alpha_c=cfg.alpha_c,
                      ds_target=cfg.ds_target)
    logs = {"reward": terms.reward, "policy": terms.policy, "ds": terms.doubly_stochastic, "ce": terms.nll}
    total = terms.total
    if cfg.scst_xe_weight > 0:
        tokens, lengths, image_index = caption_tensors(pairs, images, device)
        out = net(feats, tokens, lengths, live=store.live, expected_prob=cfg.expected_prob, image_index=image_index)
        xe = caption_loss(out, alpha_c=cfg.alpha_c, hard=False, baseline=None, label_smoothing=cfg.label_smoothing,
                          ds_target=cfg.ds_target)
        total = total + cfg.scst_xe_weight * xe.total
        logs["reference_ce"] = xe.ce
    return total, logs, len(samples.lengths)
