"""Time captioning: ``python benchmarks/bench_caption.py --model default``.

For greedy, beam 3 and beam 5: latency per image at batch 1 (preprocessing + encoder + decoding, mean
over ``--images`` images after a warm-up) and images/s at batch ``--batch-size`` (mean over
``--repeats`` batches). Images are demo/*.jpg, already opened, repeated to fill the batches. One line
per figure. ``--random`` times a randomly initialised model of the default size instead of a trained
one (it rarely emits <end>, so its captions run to --max-len: an upper bound on decoding time).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import torch  # noqa: E402

from captioner.model.search import DecodeOptions  # noqa: E402
from captioner.data.images import load_image  # noqa: E402


def random_model(vocab_size: int = 2540, features: str | None = None):
    """A default-size model with random decoder weights on the real offline encoder (``features``: the grid)."""
    from captioner.model.config import ModelConfig
    from captioner.model.caption_model import CaptionModel
    from captioner.data.vocab import SPECIALS, Vocab

    vocab = Vocab([*SPECIALS, *(f"w{i}" for i in range(vocab_size - len(SPECIALS)))])
    torch.manual_seed(0)
    from captioner.model.encoder import feature_dims

    features = features or ModelConfig.features
    head = features == "head"  # the 7x7 grid used until 2026-12, as it was
    cfg = ModelConfig(vocab_size=len(vocab), features=features, grid=7 if head else 14, position=not head,
                      word_query=not head, **feature_dims(ModelConfig.encoder, features))
    return CaptionModel(cfg, vocab, name="random").eval()


def demo_images(n: int) -> list:
    paths = sorted((ROOT / "demo").glob("*.jpg"))
    if not paths:
        sys.exit(f"bench_caption: no demo images in {ROOT / 'demo'}")
    opened = [load_image(p) for p in paths]
    return [opened[i % len(opened)] for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="shipped model name or checkpoint (default: default)")
    parser.add_argument("--random", action="store_true", help="time a random model of the default size instead")
    parser.add_argument("--features", default=None, choices=["head", "stage16", "fused"],
                        help="with --random: the annotation grid (default: the default, fused)")
    parser.add_argument("--images", type=int, default=20, help="images timed one by one at batch 1 (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before each measurement (default 2)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size for the throughput figure (default 32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed batches for the throughput figure (default 3)")
    parser.add_argument("--beams", default="1,3,5", help="beam sizes to time; 1 = greedy (default 1,3,5)")
    parser.add_argument("--max-len", type=int, default=20, help="longest caption in words (default 20)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.random:
        model = random_model(features=args.features)
    else:
        from captioner.model.caption_model import load_model

        model = load_model(args.model)
    name = "random default-size model" if args.random else model.name
    print(f"# {name}: encoder {model.cfg.encoder}, grid {model.cfg.grid}, attention {model.cfg.attention}, "
          f"{torch.get_num_threads()} threads")
    singles = demo_images(max(args.images, 1))
    batch = demo_images(args.batch_size)
    for beam in (int(b) for b in args.beams.split(",")):
        opts = DecodeOptions(beam=beam, max_len=args.max_len)
        label = "greedy" if beam == 1 else f"beam {beam}"
        for im in singles[: args.warmup]:
            model.caption_images([im], opts)
        words = 0
        start = time.perf_counter()
        for im in singles[: args.images]:
            words += len(model.caption_images([im], opts)[0].words)
        ms = 1000 * (time.perf_counter() - start) / max(args.images, 1)
        print(f"caption {label:<7} batch 1: {ms:7.1f} ms/image (mean of {args.images}, "
              f"{words / max(args.images, 1):.1f} words/caption)", flush=True)
        if args.warmup:
            model.caption_images(batch, opts)
        start = time.perf_counter()
        for _ in range(args.repeats):
            model.caption_images(batch, opts)
        rate = args.repeats * len(batch) / (time.perf_counter() - start)
        print(f"caption {label:<7} batch {len(batch)}: {rate:7.1f} images/s (mean of {args.repeats} batches)",
              flush=True)
    return 0


if __name__ == "__main__":
    from captioner.errors import CaptionerError

    try:
        sys.exit(main())
    except CaptionerError as exc:
        sys.exit(f"bench_caption: error: {exc}")
