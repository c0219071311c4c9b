"""A damaged file is an error, never a wrong caption: flipped bytes in a model, a training state or a cache entry."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import captioner
from captioner.cli.main import main as cli_main
from captioner.data.feature_cache import cache_entry, cache_features
from captioner.digests import damaged_rows, digest, row_checksums
from captioner.errors import CheckpointError
from captioner.model.encoder import Encoder
from captioner.training.loop import main as train_main
from conftest import make_checkpoint, random_pngs, train_config


def flip(path: Path, at: int, n: int = 64) -> None:
    """Invert ``n`` bytes of ``path`` starting at byte ``at`` (what a failing disk or a bad copy does)."""
    data = bytearray(path.read_bytes())
    data[at:at + n] = bytes(b ^ 0xFF for b in data[at:at + n])
    path.write_bytes(bytes(data))


def tensor_region(path: Path) -> tuple[int, int]:
    """Where a safetensors file's tensor bytes begin and end."""
    head = int.from_bytes(path.read_bytes()[:8], "little")
    return 8 + head, path.stat().st_size


# -------------------------------------------------------------------------------------------- digests
def test_digests_see_every_byte_and_ignore_dict_order():
    a = {"w": torch.arange(6, dtype=torch.float32).view(2, 3), "b": torch.zeros(2, dtype=torch.bfloat16), "n": 3}
    assert digest(a) == digest(dict(reversed(list(a.items()))))
    b = {**a, "w": a["w"].clone()}
    b["w"][1, 2] = 5.000001
    assert digest(a) != digest(b)
    assert digest({"x": torch.zeros(4)}) != digest({"x": torch.zeros(2, 2)})  # same bytes, another shape
    rows = np.arange(24, dtype=np.float16).reshape(4, 6)
    sums = row_checksums(rows)
    rows[2, 1] += 1
    assert damaged_rows(rows, sums, chunk=3) == [2]


# --------------------------------------------------------------------------------------------- models
def test_a_model_with_flipped_bytes_is_refused_not_captioned(tmp_path, capsys):
    model = make_checkpoint(tmp_path / "flipped.safetensors")
    image = Path(random_pngs(tmp_path, 1)[0])
    assert captioner.load_model(str(model)).caption(image, beam=1).words  # sound: captions
    start, end = tensor_region(model)
    flip(model, (start + end) // 2)
    with pytest.raises(CheckpointError, match="damaged"):
        captioner.load_model(str(model))
    capsys.readouterr()
    assert cli_main(["caption", str(image), "--model", str(model)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "damaged" in captured.err


def test_a_model_written_before_checksums_loads_with_a_note(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save

    model = make_checkpoint(tmp_path / "new.safetensors")
    with safe_open(str(model), framework="pt") as f:
        meta = {k: v for k, v in f.metadata().items() if k != "sha256"}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    old = tmp_path / "old.safetensors"
    old.write_bytes(save(tensors, metadata=meta))
    with pytest.warns(UserWarning, match="carries no checksum"):
        loaded = captioner.load_model(str(old))
    assert loaded.caption(Path(random_pngs(tmp_path, 1)[0]), beam=1).words


def test_models_verify_names_the_damaged_model(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "models"
    folder.mkdir()
    make_checkpoint(folder / "sound.safetensors")
    bad = make_checkpoint(folder / "broken.safetensors", seed=1)
    monkeypatch.setenv("CAPTIONER_MODELS", str(folder))
    assert cli_main(["models", "--verify"]) == 0
    assert "sound" in capsys.readouterr().out
    flip(bad, sum(tensor_region(bad)) // 2)
    assert cli_main(["models", "--verify"]) == 1
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "DAMAGED" in lines["broken"] and " ok " in lines["sound"]


# ---------------------------------------------------------------------------------- training states
def test_a_damaged_training_state_resumes_from_the_one_before_it_or_is_refused(shapes, tmp_path):
    out = tmp_path / "run"
    train_main(train_config(shapes, out, epochs=2, limit_batches=1))
    last, previous = out / "last.state.pt", out / "previous.state.pt"
    assert last.is_file() and previous.is_file()
    flip(last, last.stat().st_size // 2, 256)
    with pytest.warns(UserWarning, match="resuming from previous.state.pt"):
        result = train_main(train_config(shapes, out, epochs=3, limit_batches=1), resume=True)
    assert [row["epoch"] for row in result["history"]] == [1, 2, 3]  # epoch 2 redone from epoch 1's state
    for f in (out / "last.state.pt", out / "previous.state.pt"):
        flip(f, f.stat().st_size // 2, 256)
    with pytest.raises(CheckpointError, match="previous.state.pt"):
        train_main(train_config(shapes, out, epochs=4, limit_batches=1), resume=True)


# ------------------------------------------------------------------------------------------- the cache
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_cache_entry_is_rebuilt_with_a_warning_never_read(tmp_path, damage):
    images = random_pngs(tmp_path, 3)
    enc = Encoder("efficientnet-lite0", 2)
    store = cache_features(enc, images, tmp_path / "cache", progress=False)
    good = np.array(store.array)
    array = cache_entry(enc, images, tmp_path / "cache").with_suffix(".npy")
    del store
    if damage == "flip":
        flip(array, os.path.getsize(array) - good[2].nbytes // 2, 16)  # inside the last image's row
    else:
        os.truncate(array, os.path.getsize(array) - 100)
    calls = []
    real = enc.frozen_part
    enc.frozen_part = lambda x: calls.append(len(x)) or real(x)
    with pytest.warns(UserWarning, match="rebuilt"):
        again = cache_features(enc, images, tmp_path / "cache", progress=False)
    assert calls and np.array_equal(np.asarray(again.array), good)
    meta = json.loads(array.with_suffix(".json").read_text())
    assert len(meta["row_crc32"]) == 3
