"""Configuration dataclasses: the constructor signature of every part is its config.

A config is plain data: it round-trips through JSON (checkpoints, saved runs) and through YAML/JSON
config files, and an unknown key is an error rather than a silently ignored typo.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

ATTENTION_TYPES = ("soft", "hard", "local")
HARD_ESTIMATORS = ("paper", "token", "togo")
SCORE_FUNCTIONS = ("additive", "dot", "general")
HARD_DECODE_MODES = ("argmax", "expect", "sample")
OBJECTIVES = ("xe", "scst")


#: what ``score: auto`` means for each attention type (see ModelConfig.score)
AUTO_SCORE = {"soft": "general", "hard": "additive", "local": "additive"}


def resolve_score(score: str, attention: str) -> str:
    """The score function a config names, ``auto`` replaced by the attention type's default."""
    return AUTO_SCORE.get(attention, "additive") if score == "auto" else score


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model from a checkpoint."""

    encoder: str = "efficientnet-lite0"
    # head: the last stage (stride 32; every cell sees the whole image) | stage16: the stride-16 stage |
    # fused: stride-16 stage + head added top-down (each cell local, with the head's semantics)
    features: str = "fused"
    grid: int = 14  # the annotation grid is grid x grid locations (L = grid**2); 14 = stride 16 at 224 px
    embed_dim: int = 256
    hidden_dim: int = 512
    attention_dim: int = 256
    proj_dim: int = 512  # annotations are projected from the encoder's D to this size once per image
    attention: str = "soft"
    # auto: general (bilinear) for soft attention, additive for hard and local. Soft attention with the
    # general score points at the named object far more often (BENCHMARKS.md); hard attention's REINFORCE
    # signal learns more slowly through it
    score: str = "auto"
    dropout: float = 0.5
    local_sigma: float = 1.0  # width of the Gaussian window of local attention, in grid cells
    hard_decode: str = "argmax"  # how hard attention picks a location at test time
    position: bool = True  # add a learned 2-D (row + column) embedding to every grid cell's annotation
    word_query: bool = True  # attention queries with h_{t-1} plus the word just read, not h_{t-1} alone
    init_mean: bool = True  # start the LSTM from the mean annotation (the paper); off: a learned start that knows nothing of the image
    sentinel: bool = False  # visual sentinel (Lu et al. 2017): a non-visual slot a word may attend to instead
    vocab_size: int = 0
    feature_dim: int = 0  # D of the encoder; filled in from the encoder
    fine_dim: int = 0  # fused features: channels of the stride-16 part (the rest is the shuffled head)

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
        if self.hard_decode not in HARD_DECODE_MODES:
            raise ConfigError(f"unknown hard_decode {self.hard_decode!r}; choose one of {', '.join(HARD_DECODE_MODES)}")
        from .encoder import check_features

        check_features(ENCODERS[self.encoder], self.features, self.grid)
        for name in ("grid", "embed_dim", "hidden_dim", "attention_dim", "proj_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        return self


# what a checkpoint written before a field existed meant by its absence (the model it was trained as)
MODEL_BEFORE_FIELDS = {"init_mean": True, "features": "head", "position": False, "word_query": False, "sentinel": False, "fine_dim": 0}


@dataclass
class TrainConfig:
    """One training run. Every field is a `captioner train` flag and a config-file key."""

    data_format: str = "coco"  # coco | karpathy | flickr8k
    data: str = ""  # captions JSON (coco: the train file), Karpathy JSON, or Flickr8k folder/file
    images: str | None = None  # images folder (coco/karpathy)
    val_data: str | None = None  # coco only: the validation captions JSON
    train_split: str = "train"
    val_split: str = "val"
    out: str = "runs/run"
    cache_dir: str | None = None  # feature cache; default ~/.cache/captioner/features
    fp16_cache: bool = True
    skip_missing: bool = False
    min_word_count: int = 5
    max_len: int = 20  # longest caption (in words) used for training
    epochs: int = 20
    batch_size: int = 32  # images per batch, each with all of its captions
    lr: float = 4e-4
    encoder_lr: float = 1e-4
    fine_tune_blocks: int = 0  # 0 = frozen encoder; N = train the last N blocks
    feature_cache: bool = True  # cache what the encoder computes up to its trained blocks; off: run it all live
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    lr_decay: float = 0.8  # multiply the learning rate by this when validation BLEU-4 does not improve
    lr_patience: int = 1
    early_stop: int = 4  # stop after this many epochs without a better validation BLEU-4
    alpha_c: float = 0.0  # doubly stochastic regularisation weight (the paper: 1; off by default, see BENCHMARKS.md)
    ds_target: str = "one"  # doubly stochastic term: one (the paper: each cell's total attention -> 1) | length (-> T/L)
    instances: str | None = None  # COCO instances JSON of the training images: box supervision of attention
    box_weight: float = 1.0  # with --instances: weight of -sum gamma log alpha for words naming a boxed category
    label_smoothing: float = 0.0  # cross-entropy against (1 - eps) one-hot + eps uniform
    entropy_weight: float = 0.01  # hard attention: entropy bonus lambda_e
    reinforce_weight: float = 1.0  # hard attention: weight of the REINFORCE term lambda_r
    baseline_decay: float = 0.9  # hard attention: moving-average baseline b <- decay b + (1 - decay) log p
    expected_prob: float = 0.5  # hard attention: probability of using the expected context per image
    hard_estimator: str = "paper"  # hard attention REINFORCE: paper (caption log p, moving average) | token (word log p, per-word baseline) | togo (log p of the words from t on)
    location_samples: int = 1  # hard attention: location paths sampled per caption; >= 2: each path's baseline is the others' mean (leave-one-out)
    entropy_weight_end: float | None = None  # hard attention: anneal the entropy bonus linearly to this by the last epoch (None = constant)
    expected_prob_end: float | None = None  # hard attention: anneal the expected-context probability linearly to this by the last epoch
    val_beam: int = 3
    val_no_repeat_ngram: int = 3  # validation decoding blocks repeated n-grams like `caption` (0 = off, as before 2026-11-22)
    val_images: int | None = None  # decode only the first N validation images (None = all)
    seed: int = 0
    workers: int = 0
    threads: int | None = None
    device: str = "cpu"
    precision: str = "fp32"  # fp32 | bf16 (autocast matrix products; ~2x faster on CPUs with AVX512-BF16/AMX)
    progress: bool = True
    random_encoder: bool = False  # build the encoder with random weights (tests only)
    encoder_weights: str | None = None  # a weight file for torchvision encoders
    init_from: str | None = None  # start from this checkpoint's weights (e.g. hard attention from a soft model)
    ema_decay: float = 0.0  # > 0: validate and save a moving average of the weights (e.g. 0.999); 0 = off
    objective: str = "xe"  # xe: cross-entropy on the references | scst: self-critical training on CIDEr-D
    scst_samples: int = 5  # scst: captions sampled per image; each is judged against the mean of the others
    scst_bleu_weight: float = 0.0  # scst: reward = CIDEr-D + this x sentence BLEU-4
    scst_xe_weight: float = 0.0  # scst: add this x the cross-entropy on the reference captions to the loss
    model: ModelConfig = field(default_factory=ModelConfig)

    def validate(self) -> "TrainConfig":
        """Raise ConfigError for values no code path implements (the model part included)."""
        self.model.validate()
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"unknown precision {self.precision!r}; choose fp32 or bf16")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}")
        if self.objective == "scst" and self.scst_samples < 2:
            raise ConfigError(f"scst_samples must be at least 2 (each sample's baseline is the others' mean), "
                              f"got {self.scst_samples}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}; 0 turns the average off")
        if self.scst_bleu_weight < 0 or self.scst_xe_weight < 0:
            raise ConfigError("scst_bleu_weight and scst_xe_weight must be >= 0")
        if self.hard_estimator not in HARD_ESTIMATORS:
            raise ConfigError(f"unknown hard_estimator {self.hard_estimator!r}; choose one of {', '.join(HARD_ESTIMATORS)}")
        if self.location_samples < 1:
            raise ConfigError(f"location_samples must be at least 1, got {self.location_samples}")
        if self.expected_prob_end is not None and not 0.0 <= self.expected_prob_end <= 1.0:
            raise ConfigError(f"expected_prob_end must be in [0, 1], got {self.expected_prob_end}")
        if self.entropy_weight_end is not None and self.entropy_weight_end < 0:
            raise ConfigError(f"entropy_weight_end must be >= 0, got {self.entropy_weight_end}")
        if self.ds_target not in ("one", "length"):
            raise ConfigError(f"unknown ds_target {self.ds_target!r}; choose one or length")
        if self.box_weight < 0:
            raise ConfigError(f"box_weight must be >= 0, got {self.box_weight}")
        if self.val_no_repeat_ngram < 0:
            raise ConfigError(f"val_no_repeat_ngram must be >= 0 (0 turns the blocking off), got {self.val_no_repeat_ngram}")
        return self


T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any], source: str = "config") -> T:
    """Build a dataclass from a dict, rejecting unknown keys with a clear one-line error."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of options, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
    kwargs = dict(data)
    if cls is TrainConfig and "model" in kwargs:
        kwargs["model"] = from_dict(ModelConfig, kwargs["model"], f"{source}: model")
    return cls(**kwargs)  # type: ignore[call-arg]


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict (clear errors for missing or malformed files)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as exc:  # yaml and json raise different types; both mean "malformed"
        raise ConfigError(f"{p}: cannot parse config file ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a config file must be a mapping of option: value")
    return data
