"""docs/options.md: the reference of every ``captioner train`` option, made from the metadata --help shows.

The descriptions live on the config fields (config.option); this turns them into one markdown table
per group, so the reference cannot fall behind the flags. Regenerate it after changing a field::

    python -m captioner.cli.options_doc > docs/options.md
"""

from __future__ import annotations

import sys

from ..config import OPTION_GROUPS
from .train import TrainOption, default_text, file_only_options, train_options

REGENERATE = "python -m captioner.cli.options_doc > docs/options.md"

_INTRO = f"""\
# `captioner train` options

Every option of `captioner train`, grouped as in `captioner train --help`. Options with a config key
can also be set in a YAML or JSON file passed with `--config` (keys under `model.` go in a `model:`
mapping); flags given on the command line override the file. On/off options are `--x` / `--no-x`
on the command line and `true` / `false` in a config file; a default of `none` is an unset (null) key.

This file is generated from the config dataclasses (`captioner/model/config.py`, `captioner/training/config.py`); do not edit it by hand,
regenerate it with `{REGENERATE}`.
"""


def _cell(text: str) -> str:
    """Table-safe text: a ``|`` would end the cell and ``<time>`` would vanish as an HTML tag."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def _row(opt: TrainOption) -> str:
    flags = ", ".join(f"`{f}`" for f in opt.switch_flags)
    key = f"`{opt.key}`" if opt.key else "(command line only)"
    return f"| {flags} | {key} | `{default_text(opt.default)}` | {_cell(opt.help)} |"


def options_markdown() -> str:
    """The whole of docs/options.md."""
    options = train_options()
    parts = [_INTRO]
    for group in OPTION_GROUPS:
        rows = [_row(o) for o in options if o.group == group]
        parts.append("\n".join([f"## {group}", "", "| flag | config key | default | description |",
                                "|---|---|---|---|", *rows]) + "\n")
    rows = [f"| `{o.key}` | `{default_text(o.default)}` | {_cell(o.help)} |" for o in file_only_options()]
    parts.append("\n".join(["## config-file keys without a flag", "",
                            "Details a recipe may set (of the architecture, which older checkpoints record, or of training), with no command-line flag.", "",
                            "| config key | default | description |", "|---|---|---|", *rows]) + "\n")
    return "\n".join(parts)


def main() -> None:
    sys.stdout.write(options_markdown())


if __name__ == "__main__":
    main()
