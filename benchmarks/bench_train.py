"""Time training steps: ``python benchmarks/bench_train.py``: cached features vs the encoder run live.

The model is the default size (``ModelConfig()``) with Flickr8k's shapes: the 14x14 fused grid of
EfficientNet-Lite0 (``--features head``: the 7x7 grid of 1280-d head features used until 2026-12), 2540 words, captions of 8-20 words, batches of 32 images x 5 captions.

* cached: ``captioner.train.train_one_epoch`` (the real training loop) over random fp16 features held
  like the feature cache holds them;
* live: the same loop over ``LiveImages`` (demo/*.jpg repeated): every batch is read from disk,
  resized and run through the frozen encoder, as training without a cache would.

Prints captions/s for each and the projected seconds per Flickr8k epoch (30,000 captions).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402

from captioner.model import decoder as decoder_module  # noqa: E402
from captioner.model.config import ModelConfig  # noqa: E402
from captioner.training.config import HARD_ESTIMATORS, TrainConfig  # noqa: E402
from captioner.model.encoder import FEATURES, feature_dims  # noqa: E402
from captioner.data.feature_cache import FeatureStore, LiveImages  # noqa: E402
from captioner.model.caption_model import CaptionModel  # noqa: E402
from captioner.training.batches import Pairs  # noqa: E402
from captioner.training.loop import train_one_epoch  # noqa: E402
from captioner.training.state import TrainState  # noqa: E402
from captioner.data.vocab import SPECIALS, Vocab  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_coco_scale import proc_status  # noqa: E402

FLICKR8K_EPOCH = 30_000  # training captions: 6,000 images x 5


def make_pairs(n_images: int, per_image: int, vocab_size: int, gen: torch.Generator) -> Pairs:
    """Random captions of 8-20 words (+ <start>/<end>), ``per_image`` for each of ``n_images`` images."""
    n = n_images * per_image
    words = torch.randint(8, 21, (n,), generator=gen)
    lengths = words + 2
    tokens = torch.zeros(n, int(lengths.max()), dtype=torch.long)
    for i, w in enumerate(words.tolist()):
        tokens[i, 0] = 1  # <start>
        tokens[i, 1 : w + 1] = torch.randint(len(SPECIALS), vocab_size, (w,), generator=gen)
        tokens[i, w + 1] = 2  # <end>
    return Pairs(torch.arange(n_images), torch.arange(0, n + 1, per_image), tokens, lengths)


def cached_store(model: CaptionModel, n_images: int) -> FeatureStore:
    """Random non-negative fp16 grids, held like the feature cache holds them."""
    L, D = model.cfg.grid**2, model.cfg.feature_dim
    feats = np.random.default_rng(0).standard_normal((n_images, L, D), dtype=np.float32).clip(0, None)
    return FeatureStore(feats.astype(np.float16), [f"img{i}" for i in range(n_images)], np.ones(n_images, bool))


def live_store(model: CaptionModel, n_images: int) -> LiveImages:
    """demo/*.jpg repeated: each batch is read, resized and encoded again, as without a cache."""
    paths = sorted(str(p) for p in (ROOT / "demo").glob("*.jpg"))
    if not paths:
        sys.exit(f"bench_train: no demo images in {ROOT / 'demo'}")
    return LiveImages([paths[i % len(paths)] for i in range(n_images)], model.preprocess)


def rss_anon_mb() -> float:
    """This process's own resident memory (RssAnon: heap, tensors; not mapped files), in MB; 0 off Linux."""
    return proc_status().get("RssAnon", 0) / 1024


def bench(model: CaptionModel, cfg: TrainConfig, store, steps: int, warmup: int, per_image: int) -> tuple[float, float]:
    """Captions/s of ``train_one_epoch`` over ``steps`` batches, after ``warmup`` untimed ones, and the
    peak RssAnon seen after any batch (it grows while the C heap fragments)."""
    gen = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.decoder.parameters(), lr=cfg.lr)
    device = torch.device("cpu")
    if warmup:
        warm = make_pairs(cfg.batch_size * warmup, per_image, model.cfg.vocab_size, gen)
        train_one_epoch(model, model, optimizer, warm, store, cfg, TrainState(), device)
    pairs = make_pairs(cfg.batch_size * steps, per_image, model.cfg.vocab_size, gen)
    peak = [rss_anon_mb()]
    rate = train_one_epoch(model, model, optimizer, pairs, store, cfg, TrainState(), device,
                           on_step=lambda _: peak.append(rss_anon_mb()))["captions_per_s"]
    return rate, max(peak)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed batches per mode (default 10)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed batches first (default 1)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    parser.add_argument("--captions-per-image", type=int, default=5, help="captions per image (default 5)")
    parser.add_argument("--vocab-size", type=int, default=2540, help="vocabulary size (default 2540, Flickr8k)")
    parser.add_argument("--attention", default="soft", choices=["soft", "hard", "local"], help="(default soft)")
    parser.add_argument("--hard-estimator", default=TrainConfig.hard_estimator, choices=HARD_ESTIMATORS, help="hard attention's REINFORCE estimator "
                        f"(default {TrainConfig.hard_estimator}; the shipped flickr8k-hard: token)")
    parser.add_argument("--location-samples", type=int, default=TrainConfig.location_samples,
                        help=f"hard attention's location paths per caption (default {TrainConfig.location_samples}; flickr8k-hard: 2)")
    parser.add_argument("--modes", default="cached,live", help="which to time (default cached,live)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="(default fp32)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--features", default=ModelConfig.features, choices=FEATURES,
                        help=f"annotation grid (default {ModelConfig.features}; head = the 7x7 grid used until 2026-12)")
    parser.add_argument("--grid", type=int, default=None, help="grid side (default 14, or 7 with --features head)")
    parser.add_argument("--step-rows", type=int, default=None,
                        help=f"round each teacher-forcing step's captions up to a multiple of this (default "
                             f"{decoder_module.STEP_ROWS}; 1: exact sizes, as before 2026-12-01)")
    args = parser.parse_args(argv)
    if args.step_rows:
        decoder_module.STEP_ROWS = args.step_rows
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in ("cached", "live") for m in modes):
        parser.error(f"--modes {args.modes!r}: choose cached and/or live")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vocab = Vocab([*SPECIALS, *(f"w{i}" for i in range(args.vocab_size - len(SPECIALS)))])
    grid = args.grid or (7 if args.features == "head" else 14)
    mcfg = ModelConfig(attention=args.attention, vocab_size=len(vocab), features=args.features, grid=grid,
                       position=args.features != "head", word_query=args.features != "head",
                       **feature_dims(ModelConfig.encoder, args.features))
    model = CaptionModel(mcfg, vocab, name="bench")
    cfg = TrainConfig(batch_size=args.batch_size, progress=False, precision=args.precision, model=mcfg,
                      hard_estimator=args.hard_estimator, location_samples=args.location_samples)
    hard = f"estimator {cfg.hard_estimator}, {cfg.location_samples} location paths, " if args.attention == "hard" else ""
    print(f"# default-size {args.attention} model: {mcfg.features} grid {mcfg.grid}, hidden {mcfg.hidden_dim}, vocab {len(vocab)}, "
          f"batch {args.batch_size} images x {args.captions_per_image} captions, {args.precision}, {hard}"
          f"{torch.get_num_threads()} threads")
    for mode in modes:
        make_store = {"cached": cached_store, "live": live_store}[mode]
        store = make_store(model, args.batch_size * max(args.steps, args.warmup))
        rate, peak = bench(model, cfg, store, args.steps, args.warmup, args.captions_per_image)
        print(f"train {mode:<6}: {rate:7.1f} captions/s (mean of {args.steps} batches) = "
              f"{FLICKR8K_EPOCH / rate:6.0f} s per Flickr8k epoch ({FLICKR8K_EPOCH:,} captions); "
              f"peak RssAnon {peak:,.0f} MB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
