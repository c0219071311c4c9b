"""`captioner train` flags, generated from the config dataclasses so flags and config keys never drift.

Precedence: built-in defaults < ``--config FILE`` (YAML or JSON) < flags given on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, get_type_hints

from ..config import OPTION_GROUPS, RUNTIME, from_dict, load_config_file, to_dict

from ..model.config import ModelConfig

from ..training.config import TrainConfig

_ALIASES = {"data_format": ("--format",)}
_SKIPPED = {"model"}  # nested: its fields become flags of their own, ``--attention`` for ``model.attention``


@dataclasses.dataclass(frozen=True)
class TrainOption:
    """One ``captioner train`` option as ``--help`` and docs/options.md show it."""

    flags: tuple[str, ...]  # ("--data-format", "--format")
    key: str | None  # its config-file key ("model.attention"); None: a command-line-only flag
    default: Any
    help: str
    group: str  # one of config.OPTION_GROUPS
    kind: type  # what a value is parsed as; bool: an on/off switch

    @property
    def switch_flags(self) -> tuple[str, ...]:
        """The flags as typed: a config switch has its ``--no-`` form too."""
        if self.kind is bool and self.key is not None:
            return self.flags + tuple("--no-" + f[2:] for f in self.flags)
        return self.flags


#: flags of the command, not of the run's configuration (no config-file key)
RUN_FLAGS = (
    TrainOption(("--config",), None, None, "YAML or JSON file of options; flags given on the command line override "
                "it", RUNTIME, str),
    TrainOption(("--resume",), None, False, "continue the run in --out exactly where it stopped (same weights, "
                "optimizer, epoch, batch and random state)", RUNTIME, bool),
    TrainOption(("--overwrite",), None, False, "start again in an --out that holds a run, moving the old run to "
                "OUT.old-<time>", RUNTIME, bool),
)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _value_type(hint: Any) -> type:
    """The type a flag's text is parsed as: ``int | None`` -> int, anything unknown -> str."""
    if hint in (bool, int, float):
        return hint
    text = str(hint)
    return int if "int" in text else float if "float" in text else str


def default_text(value: Any) -> str:
    """A default as --help and the docs show it: ``none`` for empty or None, ``on``/``off`` for switches."""
    if value is None or value == "":
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def config_options(cls: type = TrainConfig, prefix: str = "", with_flag: bool = True) -> list[TrainOption]:
    """The options a config dataclass defines, from each field's ``help`` and ``group`` metadata (config.option):
    those with a flag, or (``with_flag=False``) the config-file keys without one."""
    hints = get_type_hints(cls)
    options: list[TrainOption] = []
    for f in dataclasses.fields(cls):
        if f.name in _SKIPPED or f.metadata.get("filled") or f.metadata.get("flag", True) != with_flag:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        flags = (_flag(f.name), *_ALIASES.get(f.name, ()))
        options.append(TrainOption(flags, prefix + f.name, default, f.metadata.get("help", ""),
                                   f.metadata.get("group", RUNTIME), _value_type(hints[f.name])))
    return options


def train_options() -> list[TrainOption]:
    """Every ``captioner train`` option: the command's own flags, the model's fields, then the run's."""
    return [*RUN_FLAGS, *config_options(ModelConfig, "model."), *config_options(TrainConfig)]


def file_only_options() -> list[TrainOption]:
    """Config-file keys without a flag: architecture details a recipe (or an old checkpoint) may set."""
    return [*config_options(ModelConfig, "model.", with_flag=False), *config_options(TrainConfig, with_flag=False)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``captioner train``, one argparse group per config.OPTION_GROUPS entry."""
    parser.usage = "%(prog)s [--config CONFIG] [--resume | --overwrite] [OPTION ...]"  # ~60 options: see below
    parser.epilog = ("Options with a config key can be set in the --config file too; docs/options.md lists them "
                     "all as tables (flag, config key, default, description).")
    groups = {name: parser.add_argument_group(name) for name in OPTION_GROUPS}
    for opt in train_options():
        text = f"{opt.help} (default: {default_text(opt.default)})".replace("%", "%%")
        if opt.key is None:  # command-line only: plain values, and switches without a --no- form
            action = {"action": "store_true"} if opt.kind is bool else {"type": opt.kind}
            groups[opt.group].add_argument(*opt.flags, help=text, **action)
            continue
        kwargs: dict[str, Any] = {"dest": opt.key, "default": argparse.SUPPRESS, "help": text}
        if opt.kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.update(type=opt.kind, metavar=opt.key.rpartition(".")[2].upper())
        groups[opt.group].add_argument(*opt.flags, **kwargs)


def _flags(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The options given on the command line: (run options, model options)."""
    run_opts, model_opts = {}, {}
    for key, value in vars(args).items():
        if key.startswith("model."):
            model_opts[key[6:]] = value
        elif key in TrainConfig.__dataclass_fields__ and key != "model":
            run_opts[key] = value
    return run_opts, model_opts


def _layers(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], tuple[dict[str, Any], dict[str, Any]]]:
    """Defaults < the config file (without its stages) < flags, as a plain dict; the file itself; the flags."""
    data: dict[str, Any] = to_dict(TrainConfig())
    file_data = load_config_file(args.config) if getattr(args, "config", None) else {}
    base = {k: v for k, v in file_data.items() if k not in ("stages", "export")}
    model_part = base.pop("model", {}) or {}
    from_dict(TrainConfig, {**base, "model": model_part}, args.config or "config")  # validates keys
    data.update(base)
    data["model"].update(model_part)
    run_opts, model_opts = _flags(args)
    data.update(run_opts)
    data["model"].update(model_opts)
    return data, file_data, (run_opts, model_opts)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the config file, then explicit flags."""
    return from_dict(TrainConfig, _layers(args)[0])


def run(args: argparse.Namespace) -> int:
    from ..training.loop import main

    data, file_data, flags = _layers(args)
    if "stages" in file_data:
        return _run_recipe(args, data, file_data, flags)
    result = main(from_dict(TrainConfig, data), resume=args.resume, overwrite=args.overwrite)
    if result["interrupted"]:
        return 130
    print(f"done: best validation BLEU-4 {result['best']:.2f}; checkpoints in {result['out']}")
    return 0


def _run_recipe(args: argparse.Namespace, data: dict[str, Any], file_data: dict[str, Any],
                flags: tuple[dict[str, Any], dict[str, Any]]) -> int:
    """A config file with ``stages``: each stage in turn (see captioner.training.recipe); flags override every stage."""
    from ..training.loop import main
    from ..training.recipe import run_recipe, stage_configs

    run_opts, model_opts = flags
    stages = [{**stage, **run_opts, "model": {**(stage.get("model") or {}), **model_opts}}
              if isinstance(stage, dict) else stage for stage in file_data["stages"]]
    out = Path(data["out"])
    configs = stage_configs({k: v for k, v in data.items() if k != "out"}, stages, out, args.config)
    result = run_recipe(configs, out, file_data.get("export"), main, args.resume, args.overwrite)
    if result.get("interrupted"):
        return 130
    minutes = result["recipe"]["total_seconds"] / 60
    print(f"done: {len(configs)} stages in {minutes:.1f} min; last stage's best validation BLEU-4 "
          f"{result['best']:.2f}; record in {out / 'recipe.json'}")
    return 0
