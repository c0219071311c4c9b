"""Time the synthetic generator per style: ``python benchmarks/bench_synth_styles.py --images 500``.

Why: styles differ in cost (more objects, high-frequency textures that JPEG compresses slowly), and a
benchmark that generates thousands of images of one style should know its rate. Prints a markdown table
of images per second per style; everything is written to a temporary folder that is removed afterwards.
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
    parser.add_argument("--images", type=int, default=500, help="images per style (default 500)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1, a per-core rate)")
    parser.add_argument("--styles", default="all", help="styles to time, comma-separated (default all)")
    args = parser.parse_args(argv)
    print(f"synth styles at {args.size} px, workers={args.workers}:\n")
    print("| style | images | seconds | images/s | MB |\n|---|---:|---:|---:|---:|")
    for name in synth.resolve_styles(args.styles):
        with tempfile.TemporaryDirectory(prefix="bench_synth_styles.") as tmp:
            start = time.perf_counter()
            synth.generate(Path(tmp) / "ds", args.images, image_size=args.size, workers=args.workers, style=name)
            seconds = time.perf_counter() - start
            size_mb = sum(p.stat().st_size for p in (Path(tmp) / "ds").rglob("*") if p.is_file()) / 1e6
        print(f"| {name} | {args.images} | {seconds:.1f} | {args.images / seconds:.0f} | {size_mb:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
