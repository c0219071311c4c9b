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
from ..model.decoder import HardTraining
from ..data.feature_cache import FeatureStore
from .losses import caption_loss
from ..model.caption_model import CaptionModel
from .self_critical import CaptionReward, scst_loss


def hard_training(cfg: TrainConfig, reinforce: bool) -> HardTraining:
    """The config's hard-attention training knobs. Without a REINFORCE term (the self-critical anchor on sampled
    locations) there is nothing for extra location paths to judge."""
    return HardTraining(location_samples=cfg.location_samples if reinforce else 1)


def xe_terms(net: torch.nn.Module, hard: bool, pairs: Pairs, images: torch.Tensor, store: FeatureStore,
             cfg: TrainConfig, baseline: float | None, device: torch.device,
             word_baseline: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, Any], int]:
    """Cross-entropy (+ REINFORCE for hard attention, against ``baseline``) on the reference captions of a batch."""
    feats = image_tensors(pairs, images, store, device)
    tokens, lengths, image_index = caption_tensors(pairs, images, device)
    out = net(feats, tokens, lengths, live=store.live, image_index=image_index, hard_training=hard_training(cfg, hard))
    terms = caption_loss(out, alpha_c=cfg.alpha_c, hard=hard, baseline=baseline,
                         label_smoothing=cfg.label_smoothing, estimator=cfg.hard_estimator,
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
    anchors the model to human phrasing while it chases the reward. Hard attention with
    ``cfg.scst_locations`` ``argmax`` samples the captions on the cells decoding would pick, and its
    locations learn from the anchor instead: REINFORCE with ``cfg.hard_estimator`` over
    ``cfg.location_samples`` leave-one-out paths, as in cross-entropy training.
    """
    feats = image_tensors(pairs, images, store, device)
    samples = net(feats, live=store.live, samples=cfg.scst_samples, max_len=cfg.max_len,
                  location_mode=cfg.scst_locations)
    hard_anchor = model.decoder.cfg.attention == "hard" and cfg.scst_locations == "argmax"
    terms = scst_loss(samples, reward(images.tolist(), samples, model.vocab), alpha_c=cfg.alpha_c)
    logs = {"reward": terms.reward, "policy": terms.policy, "ds": terms.doubly_stochastic, "ce": terms.nll}
    total = terms.total
    if cfg.scst_xe_weight > 0:
        tokens, lengths, image_index = caption_tensors(pairs, images, device)
        out = net(feats, tokens, lengths, live=store.live, image_index=image_index,
                  hard_training=hard_training(cfg, hard_anchor))
        xe = caption_loss(out, alpha_c=cfg.alpha_c, hard=hard_anchor, baseline=None, label_smoothing=cfg.label_smoothing,
                          estimator=cfg.hard_estimator)
        total = total + cfg.scst_xe_weight * xe.total
        logs["reference_ce"] = xe.ce
    return total, logs, len(samples.lengths)
