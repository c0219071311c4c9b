"""Validation during training: decode the validation images for real and score them.

Never teacher-forced: the captions come from the same beam search ``captioner caption`` runs, with its
defaults (repeat blocking included), so the BLEU-4 that picks ``best.safetensors`` is the one a user sees.
"""

from __future__ import annotations

import torch

from ..data.feature_cache import FeatureStore
from ..data.records import Record
from ..data.vocab import detokenize
from ..metrics.corpus import score_captions
from ..model.caption_model import CaptionModel
from ..model.search import DecodeOptions, decode
from .config import TrainConfig

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr")
CHUNK = 100  # images decoded together


@torch.no_grad()
def validate(model: CaptionModel, records: list[Record], store: FeatureStore, cfg: TrainConfig,
             device: torch.device, metrics: tuple[str, ...] = METRICS) -> dict[str, float]:
    """Corpus scores of beam-search captions of the (first ``cfg.val_max_images``) readable validation images."""
    records = [r for r in records if store.valid[store.row[r.image_path]]][: cfg.val_max_images or None]
    preds: dict[str, str] = {}
    opts = DecodeOptions(beam=cfg.val_beam, max_len=cfg.max_len)
    was_training = model.training
    model.eval()  # fine-tuned encoder blocks too: no drop-connect, no batch statistics from validation images
    try:
        for i in range(0, len(records), CHUNK):
            chunk = records[i : i + CHUNK]
            inputs = store.get([store.row[r.image_path] for r in chunk]).to(device)
            feats = model.annotations(inputs, store.live)
            for r, res in zip(chunk, decode(model.decoder, feats, model.vocab, opts)):
                preds[r.image_id] = detokenize(res.words)
    finally:
        model.train(was_training)
    refs = {r.image_id: list(r.captions) for r in records}
    return score_captions(preds, refs, metrics=list(metrics))
