"""What a run keeps besides its checkpoints: the exact training state for ``--resume``, and warm starts.

The state file holds the weights, the optimizer, the RNG, the epoch and the position in it, the moving
baselines and the log, as tensors and JSON strings loaded with ``torch.load(weights_only=True)``:
resuming never runs code, and a run resumed after Ctrl-C continues bit for bit. A SHA-256 of all of it
is saved alongside, so a damaged state is refused instead of resumed from.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..atomic import write_bytes
from ..config import to_dict
from ..digests import digest
from ..errors import CheckpointError
from ..model.caption_model import CaptionModel
from ..model.checkpoint import check_shapes, read_checkpoint
from ..model.registry import resolve_model_path
from .config import TrainConfig
from .ema import WeightAverage


DIGEST_KEY = "sha256"


@dataclass
class TrainState:
    """Everything besides the weights that an exact resume needs."""

    epoch: int = 0
    step: int = 0  # batches already done in this epoch
    best: float = -1.0
    bad_epochs: int = 0
    baseline: float | None = None
    word_baseline: list[float] | None = None  # hard attention, token estimator: per-word moving average of log p
    history: list[dict[str, Any]] = field(default_factory=list)


def previous(path: Path) -> Path:
    """Where the state before the last one is kept (``last.state.pt`` -> ``previous.state.pt``)."""
    return path.with_name(path.name.replace("last", "previous", 1) if "last" in path.name else "previous." + path.name)


def save_state(path: Path, model: CaptionModel, optimizer: torch.optim.Optimizer, state: TrainState,
               cfg: TrainConfig, average: WeightAverage | None) -> None:
    """Write the whole training state atomically (serialised in memory first: a full disk is a clear error);
    the state it replaces is kept as :func:`previous`, to resume from should the new one ever be damaged."""
    blob = {"model": model.checkpoint_state(), "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
            "state": json.dumps(state.__dict__), "config": json.dumps(to_dict(cfg))}
    if average is not None:
        blob["average"] = average.state_dict()
    blob[DIGEST_KEY] = digest(blob)
    buf = io.BytesIO()
    torch.save(blob, buf)
    if path.is_file():
        os.replace(path, previous(path))
    write_bytes(path, buf.getvalue())


def load_state(path: Path) -> dict[str, Any]:
    """The saved blob, checked for the keys a resume reads and against its checksum. A damaged state falls back,
    with a warning, to the one before it; a missing or corrupt file with nothing sound to fall back on is a
    one-line error."""
    try:
        return _load_checked(path)
    except CheckpointError as exc:
        if not previous(path).is_file():
            raise
        blob = _load_checked(previous(path))
        warnings.warn(f"{exc}; resuming from {previous(path).name}, the state saved before it", stacklevel=2)
        return blob


def _load_checked(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: nothing to resume (no training state); start without --resume")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        json.loads(blob["state"]), blob["model"], blob["optimizer"], blob["rng"]
    except Exception as exc:
        raise CheckpointError(f"{path}: corrupt training state, cannot resume ({str(exc).splitlines()[0][:120]})") from None
    saved = blob.pop(DIGEST_KEY, None)
    if saved is None:
        warnings.warn(f"{path} carries no checksum (an older captioner wrote it), so damage to it cannot be "
                      "detected", stacklevel=2)
    elif digest(blob) != saved:
        raise CheckpointError(f"{path}: the training state does not match the checksum saved with it: the file is "
                              "damaged; start again with --overwrite (--init-from the run's best.safetensors "
                              "keeps its weights)")
    return blob


def restore(path: Path, blob: dict[str, Any], model: CaptionModel, optimizer: torch.optim.Optimizer,
            average: WeightAverage | None) -> TrainState:
    """Put a saved state back into the model, optimizer, weight average and RNG; returns the loop's state."""
    try:
        model.load_checkpoint_state(path, blob["model"])
        optimizer.load_state_dict(blob["optimizer"])
        if average is not None:
            if "average" not in blob:
                raise KeyError("it has no weight average")
            average.load_state_dict(blob["average"])
    except (RuntimeError, ValueError, KeyError, CheckpointError) as exc:
        raise CheckpointError(f"{path}: training state does not match this configuration "
                              f"({str(exc).splitlines()[0][:120]})") from None
    torch.set_rng_state(blob["rng"])
    return TrainState(**json.loads(blob["state"]))


def init_weights(model: CaptionModel, path: str) -> None:
    """Warm start: copy every matching tensor from another checkpoint with the same vocabulary.

    The attention type may differ (soft -> hard shares every parameter); anything else that differs in
    shape is an error, and parameters the source lacks (a local-attention window) keep their init. A
    source whose encoder was fine-tuned passes its encoder on too, which needs at least as many of its
    last blocks trainable here: frozen blocks are read from the feature cache, made with the original weights.
    """
    src = resolve_model_path(path)
    tensors, src_cfg, src_vocab, extra = read_checkpoint(src)
    if src_vocab != model.vocab:
        raise CheckpointError(f"{src}: its vocabulary ({len(src_vocab)} words) differs from this data's "
                              f"({len(model.vocab)}); --init-from needs the same data and --min-word-count")
    enc = {k[8:]: v for k, v in tensors.items() if k.startswith("encoder.")}
    if enc:
        tuned = int(extra.get("fine_tune_blocks", 0))
        if src_cfg.encoder != model.cfg.encoder or tuned > model.encoder.fine_tune_blocks:
            raise CheckpointError(f"{src}: its {src_cfg.encoder} encoder has its last {tuned} blocks fine-tuned; "
                                  f"continue with --encoder {src_cfg.encoder} --fine-tune-blocks {tuned} (or more)")
        check_shapes(src, model.encoder.state_dict(), enc)
        model.encoder.load_state_dict(enc)
    own = model.decoder.state_dict()
    dec = {k[8:]: v for k, v in tensors.items() if k.startswith("decoder.")}
    for k, v in dec.items():
        if k in own and own[k].shape != v.shape:
            raise CheckpointError(f"{src}: tensor {k} has shape {tuple(v.shape)}, this model needs "
                                  f"{tuple(own[k].shape)}; --init-from needs the same model sizes")
    model.decoder.load_state_dict({k: v for k, v in dec.items() if k in own}, strict=False)
