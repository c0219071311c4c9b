"""The model's configuration: everything needed to rebuild a model from a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import ATTENTION, HARD, MODEL, option
from ..errors import ConfigError

ATTENTION_TYPES = ("soft", "hard", "local")
SCORE_FUNCTIONS = ("additive", "dot", "general")
HARD_MODES = ("argmax", "expect", "sample")

#: what ``score: auto`` means for each attention type (see ModelConfig.score)
AUTO_SCORE = {"soft": "general", "hard": "additive", "local": "additive"}


def resolve_score(score: str, attention: str) -> str:
    """The score function a config names, ``auto`` replaced by the attention type's default."""
    return AUTO_SCORE.get(attention, "additive") if score == "auto" else score


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model from a checkpoint."""

    encoder: str = option("efficientnet-lite0", "image CNN: efficientnet-lite0 (weights ship with the package, works "
                          "offline) | resnet50 | resnet101 | resnet152 | vgg16 | vgg19 (torchvision weights)", MODEL)
    features: str = option("fused", "which encoder stage gives the annotation grid: fused (stride-16 stage + the head "
                           "added top-down: each cell local, with the head's semantics) | stage16 | head (the last "
                           "stage, stride 32: every cell sees the whole image)", MODEL)
    grid: int = option(14, "side of the annotation grid, in cells: attention chooses among grid x grid locations "
                       "(14 = stride 16 at 224 px; 7 with --features head)", MODEL)
    embed_dim: int = option(256, "size of the word embeddings", MODEL)
    hidden_dim: int = option(512, "size of the LSTM's hidden and cell state", MODEL)
    attention_dim: int = option(256, "width of the additive score's hidden layer and of local attention's centre "
                                "predictor (the dot and general scores do not use it)", ATTENTION)
    proj_dim: int = option(512, "size the encoder's annotations are projected to, once per image", MODEL)
    attention: str = option("soft", "attention type: soft (weighted mean of the cells) | hard (one sampled cell per "
                            "word, trained with REINFORCE) | local (soft inside a moving Gaussian window)", ATTENTION)
    # general is the default for soft attention because it points at the named object far more often
    # (BENCHMARKS.md); hard attention's REINFORCE signal learns more slowly through it
    score: str = option("auto", "how the query is scored against each cell: auto (general for soft attention, "
                        "additive for hard and local) | additive | dot | general (bilinear)", ATTENTION)
    dropout: float = option(0.5, "dropout probability on the LSTM state and the output layer's input", MODEL)
    local_sigma: float = option(1.0, "local attention: width (standard deviation) of the Gaussian window, in grid "
                                "cells", ATTENTION, flag=False)
    hard_mode: str = option("argmax", "hard attention at test time: argmax (the most likely cell) | expect (the "
                            "expected context, as soft attention) | sample (a random cell); set by `captioner "
                            "export --hard-mode`", HARD, flag=False)
    # architecture facts of older checkpoints, not choices: every model since 2026-12 has both
    position: bool = option(True, "add a learned 2-D (row + column) embedding to every grid cell's annotation",
                            ATTENTION, flag=False)
    word_query: bool = option(True, "attention queries with the previous LSTM state plus the word just read "
                              "(off: the state alone)", ATTENTION, flag=False)
    # values are read over a neighbourhood, keys per cell: a stride-16 cell beside a flat object sees its outline,
    # so with glimpse 1 the peak often sat on that cell rather than on the object (docs/attention.md)
    glimpse: int = option(0, "side (odd, in cells) of the neighbourhood each cell's context is averaged over; the "
                          "score still looks at each cell alone, so attention can point at an object's own cells "
                          "while reading its outline from the cells around: 0 (auto) = 3 on grids of 10 or more "
                          "cells, else 1 (the cell alone)", ATTENTION, flag=False)
    sentinel: bool = option(False, "visual sentinel (Lu et al. 2017): a word may attend to a non-visual slot "
                            "instead of the image", ATTENTION)
    vocab_size: int = option(0, "words in the vocabulary; filled in from the training data", MODEL, filled=True)
    feature_dim: int = option(0, "channels D of the encoder's annotations; filled in from the encoder", MODEL,
                              filled=True)
    fine_dim: int = option(0, "fused features: channels of the stride-16 part (the rest is the shuffled head); "
                           "filled in from the encoder", MODEL, filled=True)

    def validate(self) -> "ModelConfig":
        """Raise ConfigError for names that no code path implements."""
        from .encoder import ENCODERS  # local import: encoder imports torchvision lazily

        if self.encoder not in ENCODERS:
            raise ConfigError(f"unknown encoder {self.encoder!r}; choose one of {', '.join(ENCODERS)}")
        if self.attention not in ATTENTION_TYPES:
            raise ConfigError(f"unknown attention type {self.attention!r}; choose one of {', '.join(ATTENTION_TYPES)}")
        self.score = resolve_score(self.score, self.attention)
        if self.score not in SCORE_FUNCTIONS:
            raise ConfigError(f"unknown score function {self.score!r}; choose one of {', '.join(SCORE_FUNCTIONS)}")
        if self.hard_mode not in HARD_MODES:
            raise ConfigError(f"unknown hard_mode {self.hard_mode!r}; choose one of {', '.join(HARD_MODES)}")
        from .encoder import check_features

        check_features(ENCODERS[self.encoder], self.features, self.grid)
        for name in ("grid", "embed_dim", "hidden_dim", "attention_dim", "proj_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.glimpse == 0:
            self.glimpse = 3 if self.grid >= 10 else 1
        if self.glimpse < 1 or self.glimpse % 2 == 0 or self.glimpse > self.grid:
            raise ConfigError(f"glimpse must be an odd number of cells from 1 to the grid's {self.grid} "
                              f"(0: auto), got {self.glimpse}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        return self


# what a checkpoint written before a field existed meant by its absence (the model it was trained as)
MODEL_BEFORE_FIELDS = {"features": "head", "position": False, "word_query": False, "sentinel": False, "fine_dim": 0,
                       "glimpse": 1}


def upgrade_config(raw: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's stored config in today's terms: fields it lacks take the values it was trained with,
    renamed fields take their new names, and a removed switch is dropped where it held the one behaviour
    still built (a ConfigError where it did not: that model can no longer be rebuilt)."""
    raw = {**MODEL_BEFORE_FIELDS, **raw}
    if "hard_decode" in raw:
        raw["hard_mode"] = raw.pop("hard_decode")
    if raw.pop("init_mean", True) is not True:
        raise ConfigError("the model starts its LSTM without the mean annotation (init_mean false), which this "
                          "version no longer builds; retrain it")
    return raw


