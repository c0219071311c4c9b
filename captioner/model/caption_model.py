"""The user-facing captioner: encoder + decoder + vocabulary, loaded from a checkpoint by name.

In the spirit of whisper: ``model = captioner.load_model("default")`` then
``model.caption("photo.jpg", beam=3)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from .config import ModelConfig
from .decoder import Decoder, HardTraining
from .results import CaptionResult
from .search import DecodeOptions, decode
from ..devices import resolve_device
from .encoder import Encoder, build_preprocess
from ..errors import CaptionerError
from ..data.erase import erase as erase_boxes
from ..data.erase import parse_boxes
from ..data.images import load_image
from ..data.vocab import Vocab
from .checkpoint import check_shapes, read_checkpoint
from .registry import resolve_model_path


class CaptionModel(torch.nn.Module):
    """Encoder and decoder together, with the vocabulary and preprocessing they were trained with."""

    familiarity = None  # a captioner.familiarity.Familiarity when the checkpoint holds one

    def __init__(self, cfg: ModelConfig, vocab: Vocab, *, pretrained_encoder: bool = True,
                 encoder_weights: str | None = None, fine_tune_blocks: int = 0, name: str = "model") -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab = vocab
        self.name = name
        self.encoder = Encoder(cfg.encoder, cfg.grid, pretrained=pretrained_encoder, weights=encoder_weights,
                               fine_tune_blocks=fine_tune_blocks, features=cfg.features)
        self.decoder = Decoder(cfg)
        self.preprocess = build_preprocess(self.encoder.spec, cfg.grid, cfg.features)

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """Decoder tensors, plus the encoder's only where it was fine-tuned."""
        state = {f"decoder.{k}": v for k, v in self.decoder.state_dict().items()}
        if not self.encoder.frozen:
            state.update({f"encoder.{k}": v for k, v in self.encoder.state_dict().items()})
        return state

    def load_checkpoint_state(self, path: str | Path, state: dict[str, torch.Tensor]) -> None:
        enc = {k[8:]: v for k, v in state.items() if k.startswith("encoder.")}
        if enc:
            check_shapes(path, self.encoder.state_dict(), enc)
            self.encoder.load_state_dict(enc)
        dec = {k[8:]: v for k, v in state.items() if k.startswith("decoder.")}
        check_shapes(path, self.decoder.state_dict(), dec)
        self.decoder.load_state_dict(dec)

    def forward(self, inputs: torch.Tensor, captions: torch.Tensor | None = None, lengths: torch.Tensor | None = None,
                *, live: bool, image_index: torch.Tensor | None = None, hard_training: HardTraining = HardTraining(),
                samples: int = 0, max_len: int = 20, location_mode: str = "sample"):
        """A training pass; ``inputs`` are cached :meth:`Encoder.frozen_part` outputs, or pixels when ``live``.

        Teacher-forced over ``captions`` (cross-entropy), or, with ``samples`` > 0, that many sampled
        captions per image with their log-probabilities (self-critical training). One module for
        DistributedDataParallel to wrap, so a fine-tuned encoder's gradients are synchronised too.
        """
        feats = self.annotations(inputs, live)
        if samples:
            from .sampling import sample_captions

            return sample_captions(self.decoder, feats, self.vocab, samples, max_len, location_mode=location_mode)
        if captions is None or lengths is None:
            raise ValueError("a teacher-forced pass needs captions and lengths")
        return self.decoder(feats, captions, lengths, image_index=image_index, hard_training=hard_training)

    def annotations(self, inputs: torch.Tensor, live: bool) -> torch.Tensor:
        """B x L x D annotations from pixels (``live``) or from cached :meth:`Encoder.frozen_part` outputs."""
        return self.encoder(inputs) if live else self.encoder.trained_part(inputs)

    @torch.no_grad()
    def features(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """B x L x D annotations for PIL images."""
        batch = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        return self.encoder(batch)

    @torch.no_grad()
    def caption_images(self, images: Sequence[Image.Image], opts: DecodeOptions = DecodeOptions()) -> list[CaptionResult]:
        """Caption already-opened images in one batch."""
        from .familiarity import annotate

        self.eval()
        feats = self.features(images)
        return annotate(self, feats, decode(self.decoder, feats, self.vocab, opts))

    def caption(self, image: str | os.PathLike | Image.Image, beam: int = 3, max_len: int = 20,
                erase: Sequence[Sequence[float]] | None = None, **options) -> CaptionResult:
        """Caption one image file or PIL image; ``erase``: ``[x, y, w, h]`` boxes (the photo's own pixels) painted
        over in the mean colour first, to see what the caption was built on (``result.erased``: the boxes
        applied, clipped to the photo)."""
        img = image if isinstance(image, Image.Image) else load_image(image)
        applied = None
        if erase is not None:
            img, applied = erase_boxes(img, parse_boxes(list(erase)))
        result = self.caption_images([img], DecodeOptions(beam=beam, max_len=max_len, **options))[0]
        result.erased = applied
        return result


def load_model(name_or_path: str = "default", device: str | torch.device = "cpu") -> CaptionModel:
    """A shipped model by name (``available_models()``) or a checkpoint path, ready to caption."""
    device = resolve_device(device)
    path = resolve_model_path(name_or_path)
    checks: list = []  # the checksum is checked while the model is built
    state, cfg, vocab, extra = read_checkpoint(path, checks)
    try:
        cfg.validate()
        model = CaptionModel(cfg, vocab, fine_tune_blocks=int(extra.get("fine_tune_blocks", 0)),
                             name=extra.get("name") or Path(path).stem)
    finally:
        for check in checks:
            check.result()  # a damaged file fails here, before any of its tensors is used
    model.load_checkpoint_state(path, state)
    from .familiarity import attach

    attach(model, path, state, extra)  # None for a checkpoint fitted without it
    return model.to(device).eval()


__all__ = ["CaptionModel", "load_model", "resolve_device", "CaptionerError"]
