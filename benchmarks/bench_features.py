"""Time feature extraction: ``python benchmarks/bench_features.py [--encoder resnet50 --random]``.

Prints images/s for the encoder forward pass alone and for preprocessing + forward (what
``captioner train`` pays once per image when it fills the feature cache), at batch ``--batch-size``,
and the process's peak resident memory (``ru_maxrss``). Images are demo/*.jpg, opened once and
repeated. EfficientNet-Lite0's weights ship offline; other encoders need ``--random`` (random weights,
same cost) unless their torchvision weight file is cached.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import torch  # noqa: E402

from captioner.model.encoder import ENCODERS, Encoder, build_preprocess  # noqa: E402
from captioner.data.images import load_image  # noqa: E402


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="efficientnet-lite0", choices=list(ENCODERS),
                        help="backbone (default efficientnet-lite0)")
    parser.add_argument("--random", action="store_true", help="random encoder weights (no weight file needed)")
    parser.add_argument("--grid", type=int, default=7, help="annotation grid side (default 7: 224 px input)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    parser.add_argument("--repeats", type=int, default=4, help="timed batches (default 4)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed batches first (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    build_preprocess(ENCODERS[args.encoder], args.grid)  # import torchvision before the baseline
    base_mb = peak_rss_mb()
    encoder = Encoder(args.encoder, args.grid, pretrained=not args.random).eval()
    preprocess = build_preprocess(encoder.spec, args.grid)
    paths = sorted((ROOT / "demo").glob("*.jpg"))
    if not paths:
        sys.exit(f"bench_features: no demo images in {ROOT / 'demo'}")
    opened = [load_image(p) for p in paths]
    images = [opened[i % len(opened)] for i in range(args.batch_size)]
    batch = torch.stack([preprocess(im) for im in images])
    label = f"{args.encoder}{' (random)' if args.random else ''} {encoder.image_size}px batch {args.batch_size}"
    print(f"# {label}: {encoder.spec.feature_dim}-d features on a {args.grid}x{args.grid} grid, "
          f"{torch.get_num_threads()} threads")
    with torch.no_grad():
        for _ in range(args.warmup):
            encoder(batch)
        start = time.perf_counter()
        for _ in range(args.repeats):
            encoder(batch)
        forward = args.repeats * args.batch_size / (time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(args.repeats):
            encoder(torch.stack([preprocess(im) for im in images]))
        full = args.repeats * args.batch_size / (time.perf_counter() - start)
    print(f"features {label}: {forward:7.1f} images/s encoder forward only (mean of {args.repeats} batches)")
    print(f"features {label}: {full:7.1f} images/s with resize + normalise from opened images")
    print(f"features {label}: peak memory {peak_rss_mb():.0f} MB resident "
          f"({peak_rss_mb() - base_mb:.0f} MB above the process before the encoder was built)")
    return 0


if __name__ == "__main__":
    from captioner.errors import CaptionerError

    try:
        sys.exit(main())
    except CaptionerError as exc:
        sys.exit(f"bench_features: error: {exc}")
