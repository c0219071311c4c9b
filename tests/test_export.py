"""`captioner export`: a training checkpoint becomes a small shippable file that captions the same."""

from __future__ import annotations

import torch

import captioner
from captioner.cli.main import main as cli_main


def test_export_halves_the_file_and_keeps_the_captions(tiny_hard_checkpoint, tmp_path, capsys):
    dst = tmp_path / "shipped.safetensors"
    assert cli_main(["export", str(tiny_hard_checkpoint), str(dst), "--name", "shipped", "--hard-mode", "expect"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert dst.stat().st_size < 0.6 * tiny_hard_checkpoint.stat().st_size
    src, out = captioner.load_model(str(tiny_hard_checkpoint)), captioner.load_model(str(dst))
    assert out.name == "shipped" and out.cfg.hard_mode == "expect" and src.cfg.hard_mode == "argmax"
    for k, v in src.decoder.state_dict().items():
        torch.testing.assert_close(out.decoder.state_dict()[k], v, rtol=1e-3, atol=1e-3)


def test_export_of_a_missing_file_is_one_line(tmp_path, capsys):
    assert cli_main(["export", str(tmp_path / "nope.safetensors"), str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err and not (tmp_path / "x.safetensors").exists()
