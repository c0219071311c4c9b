"""``--device auto`` everywhere, and progress bars that go to stderr only when a person watches it."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from captioner.cli.main import build_parser, main
from captioner.training.config import TrainConfig
from captioner.devices import resolve_device
from captioner.errors import ConfigError
from captioner.training.distributed import rank_device
from conftest import random_pngs

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


# ---------------------------------------------------------------- devices


@no_cuda
def test_auto_is_the_cpu_without_a_gpu():
    assert resolve_device("auto") == torch.device("cpu")
    assert rank_device("auto", rank=1, world=2) == torch.device("cpu")  # torchrun on CPUs: every rank on the CPU


def test_auto_picks_cuda_when_torch_sees_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device(" AUTO ") == torch.device("cuda")
    assert rank_device("auto", rank=1, world=2) == torch.device("cuda", 1)  # each torchrun rank its own GPU
    assert rank_device("cuda", rank=0, world=1) == torch.device("cuda")


def test_explicit_devices_and_bad_names():
    assert resolve_device("cpu") == torch.device("cpu")
    for bad in ("abacus", "mps"):
        with pytest.raises(ConfigError, match="use auto, cpu or cuda"):
            resolve_device(bad)


@no_cuda
def test_cuda_without_a_gpu_is_one_clear_line_in_train(tmp_path, capsys):
    rc = main(["train", "--data", str(tmp_path / "unused.json"), "--out", str(tmp_path / "run"), "--device", "cuda"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no CUDA GPU" in err and "--device cpu" in err
    assert not (tmp_path / "run").exists()


def test_auto_is_the_default_of_every_command():
    parser = build_parser()
    assert parser.parse_args(["caption", "x.jpg"]).device == "auto"
    assert parser.parse_args(["evaluate", "--data", "d.json"]).device == "auto"
    assert parser.parse_args(["serve"]).device == "auto"
    assert TrainConfig().device == "auto"


# ---------------------------------------------------------------- progress bars


@pytest.fixture
def images(tmp_path) -> list[str]:
    folder = tmp_path / "images"
    folder.mkdir()
    return random_pngs(folder, 3)


def _caption(capsys, monkeypatch, tty: bool, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)  # sys.stderr is capsys's capture here
    rc = main(["caption", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_caption_bar_on_a_terminal_goes_to_stderr_and_json_stays_pure(tiny_checkpoint, images, capsys, monkeypatch):
    rc, out, err = _caption(capsys, monkeypatch, True, *images, "--model", str(tiny_checkpoint), "--json",
                            "--batch-size", "2")
    assert rc == 0
    assert [e["image"] for e in json.loads(out)] == images  # stdout is the JSON document and nothing else
    assert "caption" in err and "3/3" in err


def test_caption_bar_shows_beside_plain_lines(tiny_checkpoint, images, capsys, monkeypatch):
    rc, out, err = _caption(capsys, monkeypatch, True, *images, "--model", str(tiny_checkpoint))
    assert rc == 0 and "3/3" in err
    assert [line.split("\t")[0] for line in out.splitlines()] == images  # no bar text between the lines


@pytest.mark.parametrize("tty, flags", [(False, ()), (True, ("--no-progress",))])
def test_no_bar_in_a_pipe_or_with_no_progress(tiny_checkpoint, images, capsys, monkeypatch, tty, flags):
    rc, out, err = _caption(capsys, monkeypatch, tty, *images, "--model", str(tiny_checkpoint), "--json", *flags)
    assert rc == 0 and err == "" and len(json.loads(out)) == 3


def test_evaluate_bar_goes_to_stderr_on_a_terminal(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    from captioner.data.synth import generate

    data = tmp_path / "synth"
    generate(data, 4, seed=0, split_fractions=(0.5, 0.0, 0.5), workers=1)
    argv = ["evaluate", "--model", str(tiny_checkpoint), "--data", str(data / "captions_test.json"), "--no-java",
            "--beam", "1"]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "evaluate" in err and "2/2" in err and "BLEU-4" in out and "evaluate:" not in out
    assert main([*argv, "--no-progress"]) == 0
    assert "evaluate" not in capsys.readouterr().err
