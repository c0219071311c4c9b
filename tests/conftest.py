"""Shared fixtures: everything runs on the CPU from files made here, never from ../shared."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from captioner.model.config import ModelConfig
from captioner.data.vocab import Vocab

WORDS = ["a", "red", "blue", "green", "circle", "square", "triangle", "left", "of", "above", "the", "small", "large"]


@pytest.fixture(autouse=True)
def _small_threads():
    torch.set_num_threads(1)  # tests are many small ops: threads only add noise
    yield


def random_pngs(folder: Path, n: int = 3) -> list[str]:
    """``n`` small random-noise PNG files in ``folder`` (a feature cache's input)."""
    import numpy as np
    from PIL import Image

    paths = []
    for i in range(n):
        p = folder / f"{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def tiny_config(attention: str = "soft", score: str = "additive", grid: int = 2, vocab_size: int = 0,
                features: str = "fused", **kw) -> ModelConfig:
    """A small model on the real offline encoder: 32 px input -> 2x2 grid (the default fused features), fast on a CPU."""
    from captioner.model.encoder import feature_dims

    return ModelConfig(encoder="efficientnet-lite0", grid=grid, embed_dim=16, hidden_dim=32, attention_dim=16,
                       proj_dim=24, attention=attention, score=score, dropout=0.0, vocab_size=vocab_size,
                       features=features, **feature_dims("efficientnet-lite0", features), **kw)


def tiny_vocab() -> Vocab:
    return Vocab.build([" ".join(WORDS)], min_count=1)


def make_checkpoint(path: Path, attention: str = "soft", seed: int = 0) -> Path:
    """Save a randomly initialised tiny model as a real checkpoint file."""
    from captioner.model.caption_model import CaptionModel
    from captioner.model.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    vocab = tiny_vocab()
    cfg = tiny_config(attention, vocab_size=len(vocab))
    model = CaptionModel(cfg, vocab, name=path.stem)
    save_checkpoint(path, model.checkpoint_state(), cfg, vocab, extra={"name": path.stem})
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-soft.safetensors")


@pytest.fixture(scope="session")
def tiny_hard_checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-hard.safetensors", attention="hard")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """A tiny synthetic COCO-style dataset (24 images of 64 px) for end-to-end training runs."""
    from captioner.data.synth import generate

    out = tmp_path_factory.mktemp("data") / "shapes"
    generate(out, 24, seed=0, image_size=64)
    return out


def train_config(shapes: Path, out: Path, **kw):
    """A training run on ``shapes`` that takes seconds: tiny hard-attention model, 2 epochs, batches of 4."""
    from captioner.training.config import TrainConfig

    base = dict(data_format="coco", data=str(shapes / "captions_train.json"), val_data=str(shapes / "captions_val.json"),
                out=str(out), cache_dir=str(out.parent / "cache"), epochs=2, batch_size=4, min_word_count=1,
                max_len=12, val_beam=2, progress=False, seed=3, lr=1e-3, model=tiny_config("hard", grid=2))
    base.update(kw)
    return TrainConfig(**base)
