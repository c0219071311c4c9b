"""Recipes: a model's whole training, stage after stage, from one config file.

A config file may hold ``stages``: a list of option mappings, each run in turn as one ``captioner train``
into ``OUT/<stage name>``, with the file's other keys (and the command line's flags) as the defaults of
every stage. ``init_from: previous`` starts a stage from the stage before it (its ``best`` checkpoint;
``previous:last`` for the last). An optional ``export`` mapping (``name``, ``checkpoint``: best | last)
writes the finished model as ``OUT/<name>.safetensors``, the file ``weights/`` ships. ``OUT/recipe.json``
keeps each stage's wall time, so the cost of a recipe is measured every time it runs.

With ``--resume``, stages already finished are skipped and the first unfinished one continues.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..atomic import write_json
from ..config import from_dict
from ..errors import ConfigError
from .config import TrainConfig

DONE_FILE = "stage.done.json"


def stage_configs(base: Mapping[str, Any], stages: list[Any], out: Path, source: str) -> list[tuple[str, TrainConfig]]:
    """(name, config) of every stage: the base options, then the stage's own, ``init_from: previous`` resolved."""
    if not isinstance(stages, list) or not stages:
        raise ConfigError(f"{source}: stages must be a non-empty list of option mappings")
    configs: list[tuple[str, TrainConfig]] = []
    for i, stage in enumerate(stages):
        if not isinstance(stage, Mapping):
            raise ConfigError(f"{source}: stage {i + 1} must be a mapping of options")
        stage = dict(stage)
        name = str(stage.pop("name", f"stage{i + 1}"))
        if not name or "/" in name or name in (n for n, _ in configs):
            raise ConfigError(f"{source}: stage {i + 1} needs a name of its own (no '/'), got {name!r}")
        model = {**base.get("model", {}), **(stage.pop("model", None) or {})}
        options = {**{k: v for k, v in base.items() if k != "model"}, **stage, "model": model, "out": str(out / name)}
        init = options.get("init_from")
        if isinstance(init, str) and init.split(":")[0] == "previous":
            if not configs:
                raise ConfigError(f"{source}: stage {name!r} starts from the previous stage, but it is the first")
            which = init.partition(":")[2] or "best"
            if which not in ("best", "last"):
                raise ConfigError(f"{source}: init_from previous:{which}: choose previous (best) or previous:last")
            options["init_from"] = str(Path(configs[-1][1].out) / f"{which}.safetensors")
        configs.append((name, from_dict(TrainConfig, options, f"{source}: stage {name!r}")))
    return configs


def run_recipe(configs: list[tuple[str, TrainConfig]], out: Path, export: Mapping[str, Any] | None,
               train: Callable[..., dict[str, Any]], resume: bool, overwrite: bool) -> dict[str, Any]:
    """Run the stages in turn (skipping finished ones on ``resume``), then the export; returns the record."""
    record_path = out / "recipe.json"
    record = json.loads(record_path.read_text()) if resume and record_path.is_file() else {"stages": {}}
    result: dict[str, Any] = {}
    for name, cfg in configs:
        done = Path(cfg.out) / DONE_FILE
        if resume and done.is_file():
            print(f"stage {name}: finished before, skipped", flush=True)
            result = {"best": json.loads(done.read_text())["best"], "interrupted": False}
            continue
        print(f"stage {name}: training into {cfg.out}", flush=True)
        start = time.perf_counter()
        stage_resume = resume and Path(cfg.out).is_dir() and any(Path(cfg.out).iterdir())
        result = train(cfg, resume=stage_resume, overwrite=overwrite and not stage_resume)
        if result.get("interrupted"):
            return result
        seconds = time.perf_counter() - start  # of this run: a resumed stage counts from where it resumed
        record["stages"][name] = {"seconds": round(seconds, 1), "best": result["best"], "out": cfg.out}
        write_json(done, {"best": result["best"], "seconds": round(seconds, 1)})
        write_json(record_path, record, indent=2)
    if export:
        record["export"] = _export(configs[-1][1], out, export)
    record["total_seconds"] = round(sum(s["seconds"] for s in record["stages"].values()), 1)
    write_json(record_path, record, indent=2)
    return {**result, "recipe": record, "out": str(out)}


def _export(last: TrainConfig, out: Path, export: Mapping[str, Any]) -> str:
    from ..model.checkpoint import export_checkpoint

    name = str(export.get("name") or out.name)
    which = str(export.get("checkpoint", "best"))
    if which not in ("best", "last"):
        raise ConfigError(f"export checkpoint must be best or last, got {which!r}")
    dest = out / f"{name}.safetensors"
    export_checkpoint(Path(last.out) / f"{which}.safetensors", dest, name=name)
    print(f"exported {dest}", flush=True)
    return str(dest)
