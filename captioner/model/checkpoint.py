"""Checkpoints that never run code: safetensors tensors + JSON metadata.

A model file is one ``.safetensors`` whose metadata holds the format version, the model config and
the vocabulary as JSON strings. Loading checks the version and every tensor shape against the config
before building anything, so a wrong or corrupt file is a clear error, never a crash deep in torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..config import from_dict, to_dict

from .config import ModelConfig, upgrade_config
from ..errors import CaptionerError, CheckpointError, ConfigError
from ..atomic import write_bytes
from ..data.vocab import Vocab
from .registry import resolve_model_path

FORMAT = "captioner-checkpoint"
VERSION = 1
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
        if isinstance(raw, dict):  # an older checkpoint: in today's terms
            raw = upgrade_config(raw)
        cfg = from_dict(ModelConfig, raw, f"{p}: config")
        vocab = Vocab.from_dict(json.loads(meta["vocab"]), f"{p}: vocabulary")
        extra = json.loads(meta.get("extra", "{}"))
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{p}: checkpoint metadata is corrupt ({exc})") from None
    except ConfigError as exc:
        raise CheckpointError(f"{p}: {exc}") from None
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
                      hard_mode: str | None = None) -> Path:
    """Copy a training checkpoint into a shippable one: fp16 tensors, a model name, a test-time hard mode."""
    tensors, cfg, vocab, extra = read_checkpoint(resolve_model_path(str(src)))
    if hard_mode:
        cfg.hard_mode = hard_mode
        cfg.validate()
    extra = {**extra, "name": name or extra.get("name") or Path(dst).stem, "exported_from": Path(src).name}
    save_checkpoint(dst, tensors, cfg, vocab, extra=extra, half=half)
    return Path(dst)
