"""One training run's configuration: every field is a `captioner train` flag and a config-file key."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ATTENTION, DATA, HARD, MODEL, OPTIMISATION, RUNTIME, SCST, option
from ..devices import DEFAULT_DEVICE, DEVICE_HELP
from ..errors import ConfigError
from ..model.config import ModelConfig

HARD_ESTIMATORS = ("paper", "token")
SCST_LOCATIONS = ("sample", "argmax")
OBJECTIVES = ("xe", "scst")


@dataclass
class TrainConfig:
    """One training run. Every field is a `captioner train` flag and a config-file key."""

    data_format: str = option("coco", "dataset format: coco | karpathy | flickr8k", DATA)
    data: str = option("", "training captions, needed by every run: a COCO captions JSON (the train file), a "
                       "Karpathy JSON, or a Flickr8k folder or caption file", DATA)
    images: str | None = option(None, "images folder (coco and karpathy; none: looked for beside the data file)",
                                DATA)
    val_images: str | None = option(None, "validation images folder (coco and karpathy; none: the --images folder, "
                                    "else looked for beside the validation data file)", DATA)
    val_data: str | None = option(None, "the validation captions JSON, needed by --format coco (karpathy and "
                                  "flickr8k validate on --val-split of --data)", DATA)
    train_split: str = option("train", "split(s) trained on, e.g. train or train,restval (karpathy and flickr8k "
                              "select it from the data; coco labels the file with it)", DATA)
    val_split: str = option("val", "split validated on each epoch (coco: the label of --val-data)", DATA)
    out: str = option("runs/run", "run folder: checkpoints, config.json, vocab.json, metrics.jsonl, curves.png "
                      "and the resume state", RUNTIME)
    cache_dir: str | None = option(None, "folder of the encoder feature cache (none: ~/.cache/captioner/features)",
                                   RUNTIME)
    skip_missing: bool = option(False, "leave out images missing on disk, with a warning (off: a missing image is "
                                "an error)", DATA)
    min_word_count: int = option(5, "a word enters the vocabulary when it occurs at least this many times in the "
                                 "training captions; rarer words become UNK", DATA)
    max_len: int = option(20, "longest caption, in words: longer training captions are cut, validation captions "
                          "stop there", DATA)
    epochs: int = option(20, "most passes over the training images (early stopping may end the run sooner)",
                         OPTIMISATION)
    batch_size: int = option(32, "images per batch (per process under torchrun), each with all of its captions",
                             OPTIMISATION)
    lr: float = option(4e-4, "Adam learning rate of the decoder", OPTIMISATION)
    encoder_lr: float = option(1e-4, "Adam learning rate of the fine-tuned encoder blocks (with --fine-tune-blocks)",
                               OPTIMISATION)
    fine_tune_blocks: int = option(0, "train the encoder's last N blocks too (0: the encoder stays frozen)",
                                   OPTIMISATION)
    feature_cache: bool = option(True, "cache what the encoder computes up to its trained blocks, once per image "
                                 "(off: run the whole encoder live every batch)", RUNTIME)
    grad_clip: float = option(5.0, "clip the gradient's global norm to this before each step (0: no clipping)",
                              OPTIMISATION)
    lr_decay: float = option(0.8, "multiply the learning rates by this after each epoch whose validation BLEU-4 is "
                             "not the best so far", OPTIMISATION)
    limit_batches: int = option(0, "train on at most this many batches of each epoch (0: all of them): smoke runs, "
                                "and benchmarks at COCO's size, where one epoch takes hours on a CPU", OPTIMISATION)
    early_stop: int = option(4, "stop after this many epochs in a row without a better validation BLEU-4",
                             OPTIMISATION)
    alpha_c: float = option(0.0, "weight of the doubly stochastic attention penalty, which pushes each cell's "
                            "attention summed over the words towards 1 (the paper: 1; 0: off, see BENCHMARKS.md)", ATTENTION)
    instances: str | None = option(None, "COCO instances JSON of the training images: supervise attention with the "
                                   "boxes of the categories the words name (config file only: no shipped recipe uses it)", ATTENTION,
                                   flag=False)
    box_weight: float = option(1.0, "with instances: weight of the box loss -sum gamma log alpha, gamma uniform "
                               "over the cells the named category's boxes cover", ATTENTION, flag=False)
    label_smoothing: float = option(0.0, "label smoothing eps: cross-entropy against (1 - eps) one-hot + eps "
                                    "uniform (0: plain cross-entropy)", OPTIMISATION)
    # token with 2 paths is the default because the paper's estimator often collapsed on the shapes (the chosen
    # cell off the object on 4 of 4 matrix runs) while token + 2 paths learnt to point (BENCHMARKS.md)
    hard_estimator: str = option("token", "hard attention: what REINFORCE rewards a sampled location with: paper "
                                 "(the caption's log p, minus a moving average) | token (the log p of the word it was "
                                 "chosen for, minus that word's moving average; averaged over words, paper over "
                                 "captions)", HARD)
    location_samples: int = option(2, "hard attention: location paths sampled per caption; 2 or more: each path's "
                                   "baseline is the mean reward of the others (leave-one-out)", HARD)
    val_beam: int = option(3, "beam size of the validation decoding whose BLEU-4 picks best.safetensors, decays the "
                           "learning rate and stops early", OPTIMISATION)
    val_max_images: int | None = option(None, "validate on only the first N validation images each epoch (none: all of "
                                        "them)", DATA)
    seed: int = option(0, "seed of every random draw (initial weights, batch order, dropout, sampled locations): "
                       "the same seed gives the same run", RUNTIME)
    threads: int | None = option(None, "CPU threads torch may use (none: torch's default)", RUNTIME)
    device: str = option(DEFAULT_DEVICE, DEVICE_HELP, RUNTIME)
    precision: str = option("fp32", "arithmetic: fp32 | bf16 (autocast matrix products to bfloat16; about 2x faster "
                            "on CPUs with AVX512-BF16 or AMX)", RUNTIME)
    progress: bool = option(True, "progress bars on stderr while caching features and training", RUNTIME)
    encoder_weights: str | None = option(None, "a weight file for a torchvision encoder (none: torchvision's cache "
                                         "folder)", MODEL)
    init_from: str | None = option(None, "start from this checkpoint's weights, a model name or path with the same "
                                   "vocabulary (e.g. hard attention from a soft model)", MODEL)
    ema_decay: float = option(0.0, "validate and save an exponential moving average of the weights with this decay, "
                              "e.g. 0.999 (0: off, the last step's weights)", OPTIMISATION)
    objective: str = option("xe", "training objective: xe (cross-entropy on the reference captions) | scst "
                            "(self-critical: reinforce the model's own samples by their CIDEr-D)", SCST)
    scst_samples: int = option(5, "scst: captions sampled per image; each is judged against the mean reward of the "
                               "others", SCST)
    scst_meteor_weight: float = option(0.0, "scst: add this x sentence METEOR (0..1, from the Java METEOR 1.5 that "
                                       "evaluation uses) to the reward; needs Java", SCST)
    scst_xe_weight: float = option(0.0, "scst: add this x the cross-entropy on the reference captions to the loss, "
                                   "to keep human phrasing", SCST)
    scst_locations: str = option("sample", "scst, hard attention: sample (each sampled caption samples its locations "
                                 "too, which share its advantage) | argmax (captions are sampled on the cells decoding "
                                 "picks, so the reward judges the policy that is evaluated; the locations then learn "
                                 "from the cross-entropy anchor's REINFORCE, which needs --scst-xe-weight > 0 and "
                                 "--location-samples 2 or more)", SCST)
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
        if min(self.scst_meteor_weight, self.scst_xe_weight) < 0:
            raise ConfigError("scst_meteor_weight and scst_xe_weight must be >= 0")
        if self.hard_estimator not in HARD_ESTIMATORS:
            raise ConfigError(f"unknown hard_estimator {self.hard_estimator!r}; choose one of {', '.join(HARD_ESTIMATORS)}")
        if self.location_samples < 1:
            raise ConfigError(f"location_samples must be at least 1, got {self.location_samples}")
        if self.scst_locations not in SCST_LOCATIONS:
            raise ConfigError(f"unknown scst_locations {self.scst_locations!r}; choose one of {', '.join(SCST_LOCATIONS)}")
        if (self.objective == "scst" and self.scst_locations == "argmax" and self.model.attention == "hard"
                and (self.scst_xe_weight <= 0 or self.location_samples < 2)):
            raise ConfigError("--scst-locations argmax trains hard attention's locations only through the cross-entropy "
                              "anchor's leave-one-out REINFORCE: give --scst-xe-weight > 0 and --location-samples 2 or more")
        if self.limit_batches < 0:
            raise ConfigError(f"limit_batches must be >= 0 (0: every batch of the epoch), got {self.limit_batches}")
        if self.box_weight < 0:
            raise ConfigError(f"box_weight must be >= 0, got {self.box_weight}")
        return self
