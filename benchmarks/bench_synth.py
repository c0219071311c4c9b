"""Time the synthetic dataset generator: ``python benchmarks/bench_synth.py --images 10000``.

Writes into a temporary folder that is removed afterwards and prints one line with images per second.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from captioner.data import synth  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000, help="number of images (default 10000)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: automatic)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_synth.") as tmp:
        start = time.perf_counter()
        summary = synth.generate(Path(tmp) / "ds", args.images, seed=args.seed, image_size=args.size,
                                 workers=args.workers)
        seconds = time.perf_counter() - start
        size_mb = sum(p.stat().st_size for p in (Path(tmp) / "ds").rglob("*") if p.is_file()) / 1e6
    print(f"synth: {summary['images']} images in {seconds:.1f} s = {summary['images'] / seconds:.0f} images/s "
          f"(workers={summary['workers']}, {args.size}px, {size_mb:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
