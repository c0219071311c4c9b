"""`captioner train` flags, generated from the config dataclasses so flags and config keys never drift.

Precedence: built-in defaults < ``--config FILE`` (YAML or JSON) < flags given on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, get_type_hints

from .config import ModelConfig, TrainConfig, from_dict, load_config_file, to_dict

_ALIASES = {"data_format": ["--format"]}
_HELP = {
    "data_format": "dataset format: coco | karpathy | flickr8k",
    "data": "captions JSON (coco train file), Karpathy JSON, or Flickr8k folder/caption file",
    "attention": "soft | hard | local", "score": "auto (general for soft, additive for hard and local) | additive | dot | general",
    "encoder": "efficientnet-lite0 (offline default) | resnet50/101/152 | vgg16/19",
    "features": "annotation grid: fused (stride-16 stage + head, top-down) | stage16 | head (stride 32, the paper's)",
    "grid": "annotation grid side (14 = stride 16 at 224 px; 7 for --features head)",
    "position": "add a learned 2-D position embedding to every grid cell",
    "word_query": "attention queries with the word just read as well as the LSTM state",
    "init_mean": "start the LSTM from the mean annotation (the paper); --no-init-mean: from a learned constant",
    "sentinel": "visual sentinel: a word may attend to a non-visual slot instead of the image (Lu et al. 2017)",
    "alpha_c": "weight of the doubly stochastic attention term (0 = off)",
    "ds_target": "doubly stochastic target per cell: one (the paper) | length (T/L: measures concentration only)",
    "instances": "COCO instances JSON of the training images: pull words naming a category into its boxes",
    "box_weight": "weight of the box-supervision loss (with --instances)",
    "hard_estimator": "hard attention REINFORCE: paper (caption log p, moving baseline) | token (word log p, per-word baseline)",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_fields(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name == "model" or (cls is ModelConfig and f.name in ("vocab_size", "feature_dim", "fine_dim")):
            continue
        hint = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else None
        names = [_flag(f.name)] + _ALIASES.get(f.name, [])
        kwargs: dict[str, Any] = {"dest": prefix + f.name, "default": argparse.SUPPRESS,
                                  "help": f"{_HELP.get(f.name, '')} (default {default})".strip()}
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            base = {int: int, float: float}.get(hint, None)
            if base is None:
                text = str(hint)
                base = int if "int" in text else float if "float" in text else str
            kwargs["type"] = base
        parser.add_argument(*names, **kwargs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML or JSON file of options (flags override it)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    parser.add_argument("--overwrite", action="store_true",
                        help="start again in an --out that holds a run, moving the old run to OUT.old-<time>")
    _add_fields(parser, TrainConfig)
    _add_fields(parser, ModelConfig, prefix="model.")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the config file, then explicit flags."""
    data: dict[str, Any] = to_dict(TrainConfig())
    if getattr(args, "config", None):
        file_data = load_config_file(args.config)
        model_part = file_data.pop("model", {}) or {}
        from_dict(TrainConfig, {**file_data, "model": model_part}, args.config)  # validates keys
        data.update(file_data)
        data["model"].update(model_part)
    for key, value in vars(args).items():
        if key.startswith("model."):
            data["model"][key[6:]] = value
        elif key in data and key != "model":
            data[key] = value
    return from_dict(TrainConfig, data)


def run(args: argparse.Namespace) -> int:
    from .train import main

    cfg = config_from_args(args)
    result = main(cfg, resume=args.resume, overwrite=args.overwrite)
    if result["interrupted"]:
        return 130
    print(f"done: best validation BLEU-4 {result['best']:.2f}; checkpoints in {result['out']}")
    return 0
