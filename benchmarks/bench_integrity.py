"""What the checksums cost: loading a shipped model, and opening a feature cache, with and without the checks.

``python benchmarks/bench_integrity.py --model default --rows 2000``: a model loaded ``--repeats`` times with
its SHA-256 checked and with the check switched off (alternating, medians); a feature-cache entry of
``--rows`` rows of the default grid (14 x 14 x 432, fp16, like Flickr8k's) opened with its CRC-32 rows
checked and without, and the same per GB. Prints one line per figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import numpy as np  # noqa: E402

from captioner.data import feature_cache  # noqa: E402
from captioner.model import checkpoint  # noqa: E402
from captioner.model.caption_model import load_model  # noqa: E402


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def model_load(name: str, repeats: int) -> tuple[float, float]:
    """(ms with the check, ms without), alternating so that both see the same machine."""
    real, real_hash = checkpoint.check_digest, checkpoint.tensor_sha256
    checked, unchecked = [], []
    for _ in range(repeats):
        checkpoint.check_digest, checkpoint.tensor_sha256 = real, real_hash
        checked.append(_median_ms(lambda: load_model(name), 1))
        checkpoint.check_digest, checkpoint.tensor_sha256 = (lambda *a: True), (lambda *a: "")
        unchecked.append(_median_ms(lambda: load_model(name), 1))
    checkpoint.check_digest, checkpoint.tensor_sha256 = real, real_hash
    return statistics.median(checked), statistics.median(unchecked)


def cache_open(rows: int, repeats: int) -> tuple[float, float, float]:
    """(ms to open with the row checks, ms without, GB) for a cache entry of ``rows`` default-grid rows."""
    from captioner.atomic import write_json
    from captioner.digests import row_checksums

    with tempfile.TemporaryDirectory(prefix="bench_integrity.") as tmp:
        stem = Path(tmp) / "entry-fp16"
        arr = np.lib.format.open_memmap(stem.with_suffix(".npy"), mode="w+", dtype=np.float16, shape=(rows, 196, 432))
        for start in range(0, rows, 256):
            arr[start:start + 256] = np.random.default_rng(start).standard_normal((min(256, rows - start), 196, 432))
        arr.flush()
        paths = [f"img{i}.jpg" for i in range(rows)]
        meta = {"paths": paths, "valid": [True] * rows, "encoder": "bench", "shape": [rows, 196, 432]}
        write_json(stem.with_suffix(".json"), {**meta, "row_crc32": row_checksums(arr)})
        gb = arr.nbytes / 1e9
        del arr
        checked = _median_ms(lambda: feature_cache._cached(stem, paths), repeats)
        write_json(stem.with_suffix(".json"), meta)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            unchecked = _median_ms(lambda: feature_cache._cached(stem, paths), repeats)
    return checked, unchecked, gb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--rows", type=int, default=2000, help="cache rows (default 2000; Flickr8k has 7000)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with_check, without = model_load(args.model, args.repeats)
    print(f"load {args.model}: {with_check:.0f} ms with its checksum checked, {without:.0f} ms without "
          f"(+{100 * (with_check / without - 1):.1f}%)")
    checked, unchecked, gb = cache_open(args.rows, args.repeats)
    print(f"open a feature cache of {args.rows} rows ({gb:.2f} GB): {checked:.0f} ms with every row's CRC-32 "
          f"checked, {unchecked:.0f} ms without; {(checked - unchecked) / gb / 1000:.2f} s per GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
