"""The same `captioner train` command under torchrun: 2 CPU processes (gloo) agree with one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from captioner.data.synth import generate


def _launch(args: list[str], out: Path, nproc: int, port_offset: int = 0) -> subprocess.CompletedProcess:
    port = 29500 + os.getpid() % 1000 + nproc + port_offset
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                "--master_addr", "127.0.0.1", "--master_port", str(port)] if nproc > 1 else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CAPTIONER_BACKEND": "gloo"}
    cmd = launcher + ["-m", "captioner", "train", *args, "--out", str(out), "--threads", "1"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)  # a hung rank fails here


def _train(args: list[str], out: Path, nproc: int) -> dict:
    proc = _launch(args, out, nproc)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[0])


def test_two_process_torchrun_matches_single_process_at_start(tmp_path):
    data = tmp_path / "shapes"
    generate(data, 24, seed=0, image_size=64)
    common = ["--format", "coco", "--data", str(data / "captions_train.json"), "--val-data",
              str(data / "captions_val.json"), "--epochs", "1", "--min-word-count", "1", "--grid", "2",
              "--embed-dim", "16", "--hidden-dim", "32", "--attention-dim", "16", "--proj-dim", "24",
              "--dropout", "0", "--val-beam", "1", "--no-progress", "--cache-dir", str(tmp_path / "cache"), "--seed", "5"]
    single = _train(common + ["--batch-size", "8"], tmp_path / "one", 1)
    double = _train(common + ["--batch-size", "4"], tmp_path / "two", 2)  # same global batch of 8 images
    assert double["first_ce"] == pytest.approx(single["first_ce"], rel=0.02)
    assert (tmp_path / "two" / "best.safetensors").is_file()
    assert not any((tmp_path / "two").glob("*rank1*"))
    assert not (tmp_path / "two" / "train.lock").exists()  # rank 0 released the run folder
    # the same command again: rank 0 refuses the finished run, and rank 1 stops with it instead of waiting
    again = _launch(common + ["--batch-size", "4"], tmp_path / "two", 2, port_offset=3)
    assert again.returncode != 0 and "already holds a run (1 epoch" in again.stderr, again.stderr[-2000:]
    assert "rank 0 could not start the run" in again.stderr
