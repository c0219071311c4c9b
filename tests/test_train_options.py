"""`captioner train` options explain themselves: one description per option, in groups, and a current docs/options.md."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

from captioner.cli.main import build_parser
from captioner.config import OPTION_GROUPS
from captioner.model.config import ModelConfig
from captioner.training.config import TrainConfig
from captioner.cli.options_doc import REGENERATE, options_markdown
from captioner.cli.train import default_text, file_only_options, train_options

DOC = Path(__file__).resolve().parent.parent / "docs" / "options.md"


def _train_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def test_every_train_option_has_a_description_and_a_group():
    parser = _train_parser()
    grouped = {a.dest: g.title for g in parser._action_groups for a in g._group_actions}
    undescribed, ungrouped = [], []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        flag = action.option_strings[0]
        description = re.sub(r"\s*\(default: [^()]*\)$", "", action.help or "").strip()
        if len(description.split()) < 3 or "(default )" in (action.help or ""):
            undescribed.append(flag)
        if grouped.get(action.dest) not in OPTION_GROUPS:
            ungrouped.append(flag)
    assert not undescribed, f"describe these in captioner/config.py (option(..., help=...)): {undescribed}"
    assert not ungrouped, f"these options sit in no group of {OPTION_GROUPS}: {ungrouped}"


def test_every_config_key_is_a_described_flag():
    keys = {f.name for f in dataclasses.fields(TrainConfig) if f.name != "model"}
    keys |= {"model." + f.name for f in dataclasses.fields(ModelConfig) if f.metadata.get("flag", True)}
    keys -= {f.name for f in dataclasses.fields(TrainConfig) if not f.metadata.get("flag", True)}
    options = {o.key: o for o in train_options() if o.key}
    assert set(options) == keys
    assert all(o.help and o.group in OPTION_GROUPS for o in options.values())


def test_empty_defaults_read_none_and_switches_on_off():
    assert [default_text(v) for v in (None, "", True, False, 4e-4, 0.0, 20, "coco")] == \
        ["none", "none", "on", "off", "0.0004", "0", "20", "coco"]
    text = _train_parser().format_help()
    assert "(default )" not in text and "(default: none)" in text
    assert re.search(r"--location-samples LOCATION_SAMPLES\s+hard attention: location paths sampled", text)


def test_the_options_reference_is_current():
    assert DOC.is_file(), f"docs/options.md is missing; make it with `{REGENERATE}`"
    assert DOC.read_text(encoding="utf-8") == options_markdown(), \
        f"docs/options.md is out of date with the config fields; regenerate it with `{REGENERATE}`"


def test_the_reference_has_a_table_per_group_and_a_row_per_option():
    doc = options_markdown()
    assert [line[3:] for line in doc.splitlines() if line.startswith("## ")] == [*OPTION_GROUPS,
                                                                                 "config-file keys without a flag"]
    rows = [line for line in doc.splitlines() if line.startswith("| `--")]
    assert len(rows) == len(train_options())
    assert all(line.count(" | ") == 3 for line in rows)  # a "|" in a description is escaped, never a new cell
    keys = doc.split("## config-file keys without a flag")[1].splitlines()
    keys = [line for line in keys if line.startswith("| `")]
    assert len(keys) == len(file_only_options()) and all(line.count(" | ") == 2 for line in keys)

