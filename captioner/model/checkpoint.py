"""Checkpoints that never run code: safetensors tensors + JSON metadata.

A model file is one ``.safetensors`` whose metadata holds the format version, the model config and
the vocabulary as JSON strings, and a SHA-256 of its tensors. Loading checks the version, the checksum
and every tensor shape against the config before building anything, so a wrong, corrupt or damaged file
is a clear error, never a crash deep in torch nor a model that captions nonsense.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from ..atomic import write_bytes
from ..config import from_dict, to_dict
from ..data.vocab import Vocab
from ..errors import CaptionerError, CheckpointError, ConfigError
from .config import ModelConfig, upgrade_config
from .registry import resolve_model_path

FORMAT = "captioner-checkpoint"
VERSION = 1
DIGEST_KEY = "sha256"  # metadata key: SHA-256 of the tensors (captioner.digests.digest)
_CHECKER = ThreadPoolExecutor(1, thread_name_prefix="captioner-checksum")  # hashlib runs without the GIL
def save_checkpoint(path: str | Path, state: dict[str, torch.Tensor], cfg: ModelConfig, vocab: Vocab,
                    extra: dict[str, Any] | None = None, half: bool = False) -> None:
    """Write tensors + config + vocabulary + their checksum atomically (``half`` stores floats as fp16 to ship small).

    Serialised in memory, then written: a full disk is then a clear error, not a failure inside safetensors.
    """
    tensors = {}
    for k, v in state.items():
        v = v.detach().cpu()
        tensors[k] = (v.half() if half and v.is_floating_point() else v).contiguous()
    meta = {"format": FORMAT, "version": str(VERSION), "config": json.dumps(to_dict(cfg)),
            "vocab": json.dumps(vocab.to_dict()), "extra": json.dumps(extra or {})}
    write_safetensors(path, tensors, meta)


def _tensor_region(data: bytes | memoryview) -> memoryview:
    """The bytes of a safetensors file after its header: every tensor, in the file's order."""
    return memoryview(data)[8 + int.from_bytes(bytes(data[:8]), "little"):]


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    """Write ``tensors`` with ``meta`` and the SHA-256 of the tensor bytes, atomically.

    The tensor bytes do not depend on the metadata (their offsets count from the end of the header), so the
    checksum of a first serialisation holds for the second, which carries it.
    """
    from safetensors.torch import save

    tensors = {k: v.contiguous() for k, v in tensors.items()}
    sha = hashlib.sha256(_tensor_region(save(tensors, metadata=meta))).hexdigest()
    write_bytes(path, save(tensors, metadata={**meta, DIGEST_KEY: sha}))


def tensor_sha256(path: Path) -> str:
    """SHA-256 of the file's tensor bytes: one hashlib call over the mapped file, which runs without the GIL."""
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        with memoryview(mapped) as view, _tensor_region(view) as region:
            return hashlib.sha256(region).hexdigest()


def check_digest(path: Path, meta: dict[str, str], actual: Future | None = None) -> bool:
    """Whether the file's tensor bytes match the checksum saved with them (False: a file with no checksum,
    which gets a one-line note); a mismatch is a CheckpointError that says what to do. ``actual``: the
    hash already being computed (started before the file was read, so that it overlaps the reading)."""
    want = meta.get(DIGEST_KEY)
    if want is None:
        warnings.warn(f"{path} carries no checksum (an older captioner wrote it), so damage to it cannot be "
                      "detected; export it again to add one", stacklevel=3)
        return False
    if (actual.result() if actual is not None else tensor_sha256(path)) != want:
        raise CheckpointError(f"{path}: its tensors do not match the checksum saved with them: the file is damaged; "
                              "export or download it again (a shipped model: reinstall captioner)")
    return True


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


def read_checkpoint(path: str | Path, checks: list[Future] | None = None,
                    ) -> tuple[dict[str, torch.Tensor], ModelConfig, Vocab, dict[str, Any]]:
    """Read and validate a checkpoint; tensors come back as float32 on the CPU.

    The checksum is checked before this returns, or, given a ``checks`` list, in a background thread whose
    future is appended there: the caller builds the model meanwhile and must call ``result()`` (which raises
    for a damaged file) before it uses the tensors.
    """
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found")
    if not _looks_like_safetensors(p) and _looks_like_pickle(p):
        raise CheckpointError(f"{p}: is a pickle or torch.save file, which can run code when loaded; captioner "
                              "only loads .safetensors checkpoints (save with captioner.model.checkpoint.save_checkpoint)")
    hashing = _CHECKER.submit(tensor_sha256, p) if checks is not None else None  # overlaps the reading
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise CheckpointError(f"{p}: not a captioner checkpoint (unreadable as safetensors: "
                              f"{str(exc).splitlines()[0][:120]})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a captioner checkpoint (no '{FORMAT}' metadata)")
    if checks is None:
        check_digest(p, meta)
    else:
        checks.append(_CHECKER.submit(check_digest, p, meta, hashing))
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


def verify_models() -> tuple[str, bool]:
    """`captioner models --verify`: each installed model checked against its checksum, one line each, and
    whether all of them are sound (a file with no checksum is reported, not failed)."""
    from safetensors import safe_open

    from .registry import named_models

    lines, sound, status = [], True, {}
    for name, path in named_models():
        if path not in status:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the missing checksum is this report's own line
                    read_checkpoint(path)
                with safe_open(str(path), framework="pt") as f:
                    status[path] = "ok" if DIGEST_KEY in (f.metadata() or {}) else "no checksum (an older file)"
            except CaptionerError as exc:
                status[path], sound = f"DAMAGED: {exc}", False
        lines.append(f"{name:<16} {status[path]}  {path}")
    return "\n".join(lines), sound
