"""Checkpoint loading never runs code and turns every wrong file into one clear CheckpointError line."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from captioner.cli.main import main
from captioner.errors import CaptionerError, CheckpointError
from captioner.model.caption_model import load_model
from captioner.model.checkpoint import read_checkpoint
from captioner.model.registry import resolve_model_path


def _contents(ckpt: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(ckpt), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


def _variant(tmp_path: Path, ckpt: Path, name: str, tensors=None, **meta_changes) -> Path:
    """A copy of a good checkpoint with some tensors or metadata entries replaced (None deletes), and a checksum
    that matches its new tensors: a well-made file that is wrong, not a damaged one."""
    from captioner.model.checkpoint import write_safetensors

    good_tensors, meta = _contents(ckpt)
    meta.update(meta_changes)
    meta = {k: v for k, v in meta.items() if v is not None and k != "sha256"}
    out = tmp_path / name
    write_safetensors(out, tensors if tensors is not None else good_tensors, meta)
    return out


def _cli_fails_cleanly(ckpt: Path, image: Path, capsys) -> str:
    """`caption --model ckpt` exits 2 with exactly one `captioner: error:` line and no traceback."""
    rc = main(["caption", str(image), "--model", str(ckpt)])
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("captioner: error: "), err
    return lines[0].replace(str(ckpt), "<path>")  # keywords must not match in tmp_path names


@pytest.fixture
def image(tmp_path) -> Path:
    p = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(p)
    return p


# ---------------------------------------------------------------- a good checkpoint


def test_round_trip_rebuilds_the_same_model(tiny_checkpoint):
    tensors, cfg, vocab, extra = read_checkpoint(tiny_checkpoint)
    model = load_model(str(tiny_checkpoint))
    assert model.cfg == cfg and model.vocab.itos == vocab.itos
    assert model.name == extra["name"] == "tiny-soft"
    for k, v in model.decoder.state_dict().items():
        torch.testing.assert_close(v, tensors[f"decoder.{k}"])


def test_header_length_starting_with_the_pickle_byte_still_loads(tmp_path, tiny_checkpoint):
    """safetensors begins with its header length: 1 checkpoint in 256 starts with 0x80, pickle's magic byte."""
    from captioner.model.checkpoint import save_checkpoint

    tensors, cfg, vocab, _ = read_checkpoint(tiny_checkpoint)
    path = tmp_path / "odd.safetensors"
    for pad in range(256):
        save_checkpoint(path, tensors, cfg, vocab, extra={"pad": "x" * pad})
        if path.read_bytes()[:1] == b"\x80":
            break
    assert path.read_bytes()[:1] == b"\x80"
    loaded = read_checkpoint(path)[0]
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)


def test_training_run_folder_resolves_to_best(tmp_path, tiny_checkpoint):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.safetensors").write_bytes(tiny_checkpoint.read_bytes())
    assert resolve_model_path(str(run)) == run / "best.safetensors"


# ---------------------------------------------------------------- code execution


class _RunsCode:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("name,writer", [("evil.safetensors", "pickle"), ("evil.pt", "pickle"),
                                         ("evil.pt", "torch.save"), ("evil.bin", "pickle-v0")])
def test_pickle_that_would_run_code_is_never_loaded(tmp_path, image, capsys, name, writer):
    marker = tmp_path / "MARKER"
    payload = _RunsCode(marker)
    path = tmp_path / name
    if writer == "torch.save":
        torch.save({"state_dict": payload}, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=0 if writer == "pickle-v0" else 4))
    assert not marker.exists()
    with pytest.raises(CheckpointError) as e:
        load_model(str(path))
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    line = _cli_fails_cleanly(path, image, capsys)
    if writer != "pickle-v0":  # protocol 0 has no magic byte: refused as unreadable safetensors instead
        assert "can run code" in line
    assert not marker.exists(), "loading a checkpoint executed code from a pickle"


def test_pickle_refusal_says_why(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, path)  # an innocent torch.save file is still refused, with the reason
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path)
    assert "pickle" in str(e.value).replace(str(path), "") and "safetensors" in str(e.value)


# ---------------------------------------------------------------- not a checkpoint


def test_random_bytes(tmp_path, image, capsys):
    path = tmp_path / "noise.safetensors"
    path.write_bytes(os.urandom(4096))
    line = _cli_fails_cleanly(path, image, capsys)
    assert line.startswith("captioner: error: <path>") and "not a captioner checkpoint" in line


def test_empty_file(tmp_path, image, capsys):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    assert "not a captioner checkpoint" in _cli_fails_cleanly(path, image, capsys)


def test_safetensors_without_our_metadata(tmp_path, image, capsys):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(path), metadata={"format": "pt"})
    line = _cli_fails_cleanly(path, image, capsys)
    assert "not a captioner checkpoint" in line and "metadata" in line


def test_wrong_format_version(tmp_path, tiny_checkpoint, image, capsys):
    path = _variant(tmp_path, tiny_checkpoint, "future.safetensors", version="99")
    line = _cli_fails_cleanly(path, image, capsys)
    assert "version 99" in line and "upgrade" in line


def test_wrong_tensor_shape(tmp_path, tiny_checkpoint, image, capsys):
    tensors, _ = _contents(tiny_checkpoint)
    key = sorted(k for k in tensors if k.startswith("decoder."))[0]
    tensors[key] = torch.zeros(*[n + 1 for n in tensors[key].shape])
    path = _variant(tmp_path, tiny_checkpoint, "shape.safetensors", tensors)
    line = _cli_fails_cleanly(path, image, capsys)
    assert key.removeprefix("decoder.") in line and "shape" in line


def test_missing_tensor(tmp_path, tiny_checkpoint, image, capsys):
    tensors, _ = _contents(tiny_checkpoint)
    key = sorted(k for k in tensors if k.startswith("decoder."))[-1]
    del tensors[key]
    path = _variant(tmp_path, tiny_checkpoint, "missing.safetensors", tensors)
    assert "missing" in _cli_fails_cleanly(path, image, capsys)


def test_non_finite_weights(tmp_path, tiny_checkpoint):
    tensors, _ = _contents(tiny_checkpoint)
    key = sorted(tensors)[0]
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    path = _variant(tmp_path, tiny_checkpoint, "nan.safetensors", tensors)
    with pytest.raises(CheckpointError) as e:
        load_model(str(path))
    assert "NaN" in str(e.value) and key in str(e.value)


@pytest.mark.parametrize("change,expect", [
    ({"config": None}, "corrupt"),
    ({"config": "{not json"}, "corrupt"),
    ({"config": "[]"}, "mapping"),
    ({"vocab": '{"itos": 3}'}, "vocabulary"),
    ({"extra": "[1, 2]"}, "extra"),
    ({"extra": '{"fine_tune_blocks": "all"}'}, "fine_tune_blocks"),
    ({"extra": '{"name": 5}'}, "name"),
])
def test_corrupt_metadata(tmp_path, tiny_checkpoint, change, expect):
    path = _variant(tmp_path, tiny_checkpoint, "meta.safetensors", **change)
    with pytest.raises(CaptionerError) as e:
        load_model(str(path))
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert expect in str(e.value).replace(str(path), "")


@pytest.mark.parametrize("field,value,expect", [
    ("hidden_dim", "32", "hidden_dim"),
    ("grid", 2.5, "grid"),
    ("dropout", None, "dropout"),
    ("encoder", "resnet999", "unknown encoder"),
    ("grid", 0, "grid must be at least 1"),
])
def test_bad_config_values_name_the_file(tmp_path, tiny_checkpoint, field, value, expect):
    _, meta = _contents(tiny_checkpoint)
    cfg = json.loads(meta["config"])
    cfg[field] = value
    path = _variant(tmp_path, tiny_checkpoint, "cfg.safetensors", config=json.dumps(cfg))
    with pytest.raises(CheckpointError) as e:
        load_model(str(path))
    assert str(path) in str(e.value) and expect in str(e.value).replace(str(path), "")


def test_unexpected_encoder_tensors(tmp_path, tiny_checkpoint):
    tensors, _ = _contents(tiny_checkpoint)
    tensors["encoder.bogus"] = torch.zeros(2)
    path = _variant(tmp_path, tiny_checkpoint, "enc.safetensors", tensors)
    with pytest.raises(CheckpointError):
        load_model(str(path))


# ---------------------------------------------------------------- names and devices


def test_unknown_model_name(image, capsys):
    line = _cli_fails_cleanly(Path("no-such-model"), image, capsys)
    assert "unknown model '<path>'" in line and "checkpoint file" in line


def test_device_cuda_without_a_gpu(tiny_checkpoint, image, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rc = main(["caption", str(image), "--model", str(tiny_checkpoint), "--device", "cuda"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and "Traceback" not in err
    assert err.splitlines() == [err.strip()] and "cuda" in err and "--device cpu" in err


def test_unknown_device_is_a_clear_error(tiny_checkpoint, image, capsys):
    rc = main(["caption", str(image), "--model", str(tiny_checkpoint), "--device", "abacus"])
    assert rc == 2 and "abacus" in capsys.readouterr().err
