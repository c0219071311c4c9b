"""Configuration plumbing: options that carry their own help, and dicts <-> dataclasses.

Every part's constructor signature is its config (``captioner.model.config.ModelConfig``,
``captioner.training.config.TrainConfig``). A config is plain data: it round-trips through JSON
(checkpoints, saved runs) and through YAML/JSON config files, and an unknown key is an error rather
than a silently ignored typo.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import field, fields
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

#: the argparse groups of ``captioner train --help`` and the sections of docs/options.md, in this order
OPTION_GROUPS = ("data", "model", "attention", "optimisation", "hard attention / REINFORCE", "self-critical", "runtime")
DATA, MODEL, ATTENTION, OPTIMISATION, HARD, SCST, RUNTIME = OPTION_GROUPS


def option(default: Any, help: str, group: str, *, flag: bool = True, filled: bool = False) -> Any:
    """A config field that carries its own one-line description and group.

    ``captioner train --help``, the config-file keys and docs/options.md are all made from these, so
    they cannot drift apart. ``flag=False``: a config-file key without a command-line flag (a detail
    of the architecture a recipe may set, documented apart); ``filled=True``: a field the code fills
    in (no flag, not documented).
    """
    if group not in OPTION_GROUPS:
        raise ValueError(f"unknown option group {group!r}; choose one of {', '.join(OPTION_GROUPS)}")
    return field(default=default, metadata={"help": help, "group": group, "flag": flag and not filled,
                                            "filled": filled})


T = TypeVar("T")


def _nested(f: dataclasses.Field) -> type | None:
    """The dataclass type of a field whose default is a nested config (TrainConfig.model), else None."""
    if f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
        return None
    value = f.default_factory()  # type: ignore[misc]
    return type(value) if dataclasses.is_dataclass(value) else None


def from_dict(cls: type[T], data: dict[str, Any], source: str = "config") -> T:
    """Build a dataclass from a dict, rejecting unknown keys with a clear one-line error."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of options, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
    kwargs = dict(data)
    for name, value in data.items():
        inner = _nested(known[name])
        if inner is not None:
            kwargs[name] = from_dict(inner, value, f"{source}: {name}")
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
