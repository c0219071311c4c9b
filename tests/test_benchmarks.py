"""The speed and integrity benchmarks run end to end at a toy size (what they measure is not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_speed_benchmark_times_training_latency_and_throughput(tmp_path):
    out = tmp_path / "speed.json"
    text = _bench("benchmarks/bench_speed.py", "--images", "30", "--epochs", "1", "--photos", "1", "--repeats", "1",
                  "--batch", "2", "--batches", "1", "--work", str(tmp_path / "work"), "--json", str(out),
                  "--train-args", "--grid 2 --batch-size 4 --min-word-count 1 --val-beam 1 --embed-dim 16 --hidden-dim 32")
    fig = json.loads(out.read_text())["figures"]["this checkout"]
    assert len(fig["train"]["captions_per_s"]) == 1 and fig["train"]["captions_per_s"][0] > 0
    assert len(fig["train"]["bleu4"]) == 1  # the validation curve, to compare trees by
    cap = fig["caption"]
    assert all(cap[k] > 0 for k in ("latency_ms", "encoder_ms", "caption_images_per_s", "encoder_images_per_s"))
    assert "| this checkout |" in text  # the markdown tables name the tree they measured


def test_integrity_benchmark_times_the_checks(tmp_path):
    text = _bench("benchmarks/bench_integrity.py", "--model", "default", "--rows", "20", "--repeats", "1")
    assert "with its checksum checked" in text and "CRC-32" in text
