"""Checkpoints that never run code: safetensors tensors + JSON metadata, and the shipped-model registry.

A model file is one ``.safetensors`` whose metadata holds the format version, the model config and
the vocabulary as JSON strings. Loading checks the version and every tensor shape against the config
before building anything, so a wrong or corrupt file is a clear error, never a crash deep in torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..config import MODEL_BEFORE_FIELDS, ModelConfig, from_dict, to_dict
from ..errors import CaptionerError, CheckpointError, ConfigError
from ..atomic import write_bytes
from ..data.vocab import Vocab

FORMAT = "captioner-checkpoint"
VERSION = 1
#: the checkout's weights/ folder (editable installs and running from the repository)
WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
#: the copy of weights/*.safetensors that a built wheel carries (setup.py puts it there)
PACKAGE_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "shipped_weights"
#: os.pathsep-separated folders searched for NAME.safetensors before every other place
MODELS_ENV = "CAPTIONER_MODELS"
#: shipped model names -> file names in weights/ ("default" is the best Flickr8k model)
MODELS = {
    "flickr8k-soft": "flickr8k-soft.safetensors",
    "flickr8k-hard": "flickr8k-hard.safetensors",
    "synth-soft": "synth-soft.safetensors",
    "synth-hard": "synth-hard.safetensors",
}
ALIASES = {"default": "flickr8k-soft"}


def user_models_dir() -> Path:
    """The per-user model folder, ``$XDG_CACHE_HOME/captioner/models`` (``~/.cache`` when unset, per XDG)."""
    cache = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(cache) if os.path.isabs(cache) else Path.home() / ".cache"
    return base / "captioner" / "models"


def _env_model_dirs() -> list[Path]:
    """The folders named by CAPTIONER_MODELS; one that is not a folder is an error, never silently skipped."""
    dirs = [Path(d).expanduser() for d in os.environ.get(MODELS_ENV, "").split(os.pathsep) if d]
    for d in dirs:
        if not d.is_dir():
            raise ConfigError(f"{MODELS_ENV} names {d}, which is not an existing folder; "
                              f"fix or unset {MODELS_ENV}")
    return dirs


def search_path() -> list[Path]:
    """Folders searched for models, first match wins: CAPTIONER_MODELS, user cache, installed package, checkout.

    The checkout's weights/ counts only beside a pyproject.toml: installed, its place is site-packages/weights,
    which is some other package's folder if anything.
    """
    checkout = [WEIGHTS_DIR] if (WEIGHTS_DIR.parent / "pyproject.toml").is_file() else []
    return list(dict.fromkeys([*_env_model_dirs(), user_models_dir(), PACKAGE_WEIGHTS_DIR, *checkout]))


def _places() -> str:
    """The search path as one line, for errors that must say everywhere we looked."""
    unset = [] if os.environ.get(MODELS_ENV) else [f"${MODELS_ENV} (unset)"]
    return ", ".join(unset + [str(d) for d in search_path()])


def find_models() -> dict[str, Path]:
    """Every model on the search path: NAME.safetensors -> NAME, shipped names first, earlier folders win."""
    found: dict[str, Path] = {}
    for folder in search_path():
        for f in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
            if f.is_file() and f.stem not in ALIASES:
                found.setdefault(f.stem, f)
    order = [n for n in MODELS if n in found] + sorted(n for n in found if n not in MODELS)
    return {n: found[n] for n in order}


def _named_models() -> list[tuple[str, Path]]:
    """(name, file) for every usable name: the aliases of found models first, then the models."""
    models = find_models()
    return [(a, models[n]) for a, n in ALIASES.items() if n in models] + list(models.items())


def available_models() -> list[str]:
    """Names accepted by ``load_model`` whose files are on the search path (aliases first)."""
    return [name for name, _ in _named_models()]


def models_table() -> str:
    """`captioner models`: each name with its file's size and location, so one sees which copy is used."""
    rows = _named_models()
    if not rows:
        raise _no_models_error()
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {path.stat().st_size / 1e6:6.1f} MB  {path}" for name, path in rows)


def _no_models_error() -> CheckpointError:
    """The error for an install with no model anywhere: it names every folder searched."""
    return CheckpointError(f"no models found; looked in {_places()}; reinstall captioner, put NAME.safetensors "
                           f"in one of those folders or point {MODELS_ENV} at a folder holding them")


def resolve_model_path(name_or_path: str) -> Path:
    """A model name on the search path, an alias, or a path to a checkpoint file or training run folder."""
    name = ALIASES.get(name_or_path, name_or_path)
    models = find_models()
    if name in models:
        return models[name]
    if name in MODELS:
        if not models:
            raise _no_models_error()
        raise CheckpointError(f"model {name_or_path!r} is not installed: {MODELS[name]} is in none of {_places()}; "
                              "reinstall captioner or train it with `captioner train`")
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.is_dir() and (path / "best.safetensors").is_file():
        return path / "best.safetensors"  # a training run folder
    choices = ", ".join(available_models()) or "none installed"
    raise CheckpointError(f"unknown model {name_or_path!r}: not an installed model ({choices}) nor a checkpoint file")


def save_checkpoint(path: str | Path, state: dict[str, torch.Tensor], cfg: ModelConfig, vocab: Vocab,
                    extra: dict[str, Any] | None = None, half: bool = False) -> None:
    """Write tensors + config + vocabulary atomically (``half`` stores floats as fp16 to ship small).

    Serialised in memory, then written: a full disk is then a clear error, not a failure inside safetensors.
    """
    from safetensors.torch import save

    tensors = {}
    for k, v in state.items():
        v = v.detach().cpu()
        tensors[k] = (v.half() if half and v.is_floating_point() else v).contiguous()
    meta = {"format": FORMAT, "version": str(VERSION), "config": json.dumps(to_dict(cfg)),
            "vocab": json.dumps(vocab.to_dict()), "extra": json.dumps(extra or {})}
    write_bytes(path, save(tensors, metadata=meta))


def _looks_like_safetensors(path: Path) -> bool:
    """A safetensors file: a little-endian u64 header length, then that many bytes of JSON, then data."""
    with path.open("rb") as fh:
        head = fh.read(9)
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 8 + n <= path.stat().st_size


def _looks_like_pickle(path: Path) -> bool:
    """Pickle protocol 2+ (b"\\x80" + protocol byte) or a torch.save zip archive."""
    with path.open("rb") as fh:
        head = fh.read(4)
    return head[:1] == b"\x80" or head == b"PK\x03\x04"


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelConfig, Vocab, dict[str, Any]]:
    """Read and validate a checkpoint; tensors come back as float32 on the CPU."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found")
    if not _looks_like_safetensors(p) and _looks_like_pickle(p):
        raise CheckpointError(f"{p}: is a pickle or torch.save file, which can run code when loaded; captioner "
                              "only loads .safetensors checkpoints (save with captioner.weights.save_checkpoint)")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise CheckpointError(f"{p}: not a captioner checkpoint (unreadable as safetensors: "
                              f"{str(exc).splitlines()[0][:120]})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a captioner checkpoint (no '{FORMAT}' metadata)")
    if meta.get("version") != str(VERSION):
        raise CheckpointError(f"{p}: checkpoint format version {meta.get('version')} is not supported "
                              f"(this captioner reads version {VERSION}); upgrade captioner")
    try:
        raw = json.loads(meta["config"])
        if isinstance(raw, dict):  # an older checkpoint: the fields it lacks take the values it was trained with
            raw = {**MODEL_BEFORE_FIELDS, **raw}
        cfg = from_dict(ModelConfig, raw, f"{p}: config")
        vocab = Vocab.from_dict(json.loads(meta["vocab"]), f"{p}: vocabulary")
        extra = json.loads(meta.get("extra", "{}"))
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{p}: checkpoint metadata is corrupt ({exc})") from None
    _check_config(p, cfg)
    _check_extra(p, extra)
    if len(vocab) != cfg.vocab_size:
        raise CheckpointError(f"{p}: vocabulary has {len(vocab)} words but the config says {cfg.vocab_size}")
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    for k, v in tensors.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{p}: tensor {k} holds NaN or infinite values; the checkpoint is corrupt "
                                  "(did training diverge?); use an earlier checkpoint")
    return tensors, cfg, vocab, extra


def _check_config(path: Path, cfg: ModelConfig) -> None:
    """Field types and names, checked here so a bad file is a CheckpointError naming it, not a TypeError later."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(ModelConfig)
    for f in dataclasses.fields(ModelConfig):
        value, want = getattr(cfg, f.name), hints[f.name]
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)) if want is float else \
            (isinstance(value, want) and not (want is int and isinstance(value, bool)))
        if not ok:
            raise CheckpointError(f"{path}: checkpoint config field {f.name!r} should be {want.__name__}, got "
                                  f"{value!r}; the checkpoint is corrupt")
    try:
        cfg.validate()
    except CaptionerError as exc:
        raise CheckpointError(f"{path}: checkpoint config is invalid ({exc})") from None


def _check_extra(path: Path, extra: Any) -> None:
    """The free-form ``extra`` metadata is read by load_model: it must be a mapping with sane values."""
    if not isinstance(extra, dict):
        raise CheckpointError(f"{path}: checkpoint metadata 'extra' must be a JSON object; the checkpoint is corrupt")
    blocks = extra.get("fine_tune_blocks", 0)
    if not isinstance(blocks, int) or isinstance(blocks, bool) or blocks < 0:
        raise CheckpointError(f"{path}: checkpoint metadata fine_tune_blocks={blocks!r} is not a count; "
                              "the checkpoint is corrupt")
    if not isinstance(extra.get("name", ""), str):
        raise CheckpointError(f"{path}: checkpoint metadata name={extra['name']!r} is not a string")


def check_shapes(path: str | Path, expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> None:
    """Every expected tensor present with the same shape, and nothing unknown."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: tensors do not match the model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}); is it from another version?")
    for k, v in expected.items():
        if tuple(got[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{path}: tensor {k} has shape {tuple(got[k].shape)}, "
                                  f"the config expects {tuple(v.shape)}")


def export_checkpoint(src: str | Path, dst: str | Path, *, half: bool = True, name: str | None = None,
                      hard_decode: str | None = None) -> Path:
    """Copy a training checkpoint into a shippable one: fp16 tensors, a model name, a test-time hard mode."""
    tensors, cfg, vocab, extra = read_checkpoint(resolve_model_path(str(src)))
    if hard_decode:
        cfg.hard_decode = hard_decode
        cfg.validate()
    extra = {**extra, "name": name or extra.get("name") or Path(dst).stem, "exported_from": Path(src).name}
    save_checkpoint(dst, tensors, cfg, vocab, extra=extra, half=half)
    return Path(dst)
