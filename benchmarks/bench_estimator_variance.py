"""How noisy is each REINFORCE estimator? ``python benchmarks/bench_estimator_variance.py --model RUN/best.safetensors
--format flickr8k --data FLICKR8K``

Takes a hard-attention model (a checkpoint part-way through training is the honest case) and one
fixed batch of training images with all their captions, then computes the gradient of the REINFORCE
term with respect to the attention parameters ``--repeats`` times, each with new location samples.
Every caption samples its locations (no expected context) and there is no entropy bonus, so the
spread comes from the estimator alone. Moving baselines are warmed up on the same batch first, as
training would have them.

Prints, per estimator and number of location paths K: the relative variance
E||g - mean g||^2 / ||mean g||^2 (lower = fewer batches to learn where to look), the cosine of
the mean gradient with the mean gradient of token with K = 4 leave-one-out paths (the least noisy),
and the norm of the REINFORCE gradient on the attention parameters and on everything else (LSTM,
embeddings, projections, which alpha also depends on) beside the cross-entropy's gradient norm: the
total is clipped (``--grad-clip``), so a REINFORCE term much larger than the cross-entropy shrinks the
words' own gradient.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import torch  # noqa: E402

from captioner.training.batches import caption_tensors, image_tensors, make_pairs  # noqa: E402
from captioner.training.config import TrainConfig  # noqa: E402
from captioner.model.decoder import HardTraining  # noqa: E402
from captioner.data.feature_cache import cache_features  # noqa: E402
from captioner.training.losses import caption_loss, update_baseline, update_word_baseline  # noqa: E402
from captioner.model.caption_model import load_model  # noqa: E402
from captioner.training.batches import prepare_data  # noqa: E402

SETTINGS = [("paper", 1), ("token", 1), ("token", 2), ("paper", 4), ("token", 4)]


def reinforce_gradient(model, feats, tokens, lengths, image_index, estimator: str, paths: int, baseline,
                       word_baseline) -> tuple[torch.Tensor, float, float]:
    """One sample of the REINFORCE gradient of the attention parameters (flat), its norm on the other
    decoder parameters, and the cross-entropy's gradient norm on those."""
    out = model.decoder(feats, tokens, lengths, image_index=image_index,
                        hard_training=HardTraining(expected_prob=0.0, location_samples=paths))
    ce = caption_loss(out, alpha_c=0.0, hard=False, baseline=None)
    terms = caption_loss(out, alpha_c=0.0, hard=True, baseline=baseline, entropy_weight=0.0, estimator=estimator,
                         word_baseline=word_baseline)
    attention = list(model.decoder.attention.parameters())
    ids = {id(p) for p in attention}
    rest = [p for p in model.decoder.parameters() if id(p) not in ids]
    g_ce = torch.autograd.grad(ce.total, rest, retain_graph=True, allow_unused=True)
    g_rl = torch.autograd.grad(terms.total - ce.total, attention + rest, allow_unused=True)
    norm = lambda gs: float(sum((g.float() ** 2).sum() for g in gs if g is not None) ** 0.5)  # noqa: E731
    flat = torch.cat([g.flatten() for g in g_rl[: len(attention)]])
    return flat, norm(g_rl[len(attention):]), norm(g_ce)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--format", default="flickr8k")
    ap.add_argument("--data", required=True)
    ap.add_argument("--images", default=None)
    ap.add_argument("--val-data", default=None, help="coco format: the validation captions JSON (not used, but required)")
    ap.add_argument("--batch", type=int, default=32, help="images in the fixed batch (default 32)")
    ap.add_argument("--repeats", type=int, default=30, help="gradient samples per estimator (default 30)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    if model.cfg.attention != "hard":
        sys.exit(f"{args.model}: not a hard-attention model")
    cfg = TrainConfig(data_format=args.format, data=args.data, images=args.images, val_data=args.val_data)
    train_recs, _ = prepare_data(cfg)
    train_recs = train_recs[: args.batch]
    store = cache_features(model.encoder, sorted({r.image_path for r in train_recs}), None, progress=False)
    pairs = make_pairs(train_recs, store, model.vocab, cfg.max_len)
    images = torch.arange(pairs.n_images)
    feats = model.annotations(image_tensors(pairs, images, store, torch.device("cpu")), store.live)
    tokens, lengths, image_index = caption_tensors(pairs, images, torch.device("cpu"))
    model.decoder.train()
    model.decoder.dropout.p = 0.0  # the spread of the location samples, not of dropout
    baseline = word_baseline = None
    torch.manual_seed(0)
    for _ in range(10):  # warm the moving baselines as training would have them
        with torch.no_grad():
            out = model.decoder(feats, tokens, lengths, image_index=image_index, hard_training=HardTraining(expected_prob=0.0))
            terms = caption_loss(out, alpha_c=0.0, hard=True, baseline=None, estimator="token")
        baseline = update_baseline(baseline, terms.reward, 0.9)
        word_baseline = update_word_baseline(word_baseline, *terms.word_rewards, 0.9)
    results = {}
    for estimator, paths in SETTINGS:
        torch.manual_seed(1)
        samples = [reinforce_gradient(model, feats, tokens, lengths, image_index, estimator, paths, baseline,
                                      word_baseline) for _ in range(args.repeats)]
        grads = torch.stack([s[0] for s in samples])
        results[(estimator, paths)] = grads, sum(s[1] for s in samples) / len(samples), samples[0][2]
    reference = results[("token", 4)][0].mean(0)
    print(f"{args.model}: {pairs.n_images} images, {len(lengths)} captions, {args.repeats} gradient samples each")
    print("| estimator | paths K | relative variance | cosine with token K=4 mean | REINFORCE grad norm, attention "
          "| REINFORCE grad norm, rest | cross-entropy grad norm, rest |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for (estimator, paths), (grads, rest, ce) in results.items():
        mean = grads.mean(0)
        rel = float(((grads - mean) ** 2).sum(1).mean() / mean.pow(2).sum().clamp_min(1e-30))
        cos = float(torch.nn.functional.cosine_similarity(mean, reference, dim=0))
        att = float(grads.norm(dim=1).mean())
        print(f"| {estimator} | {paths} | {rel:.2f} | {cos:.3f} | {att:.3f} | {rest:.3f} | {ce:.3f} |")


if __name__ == "__main__":
    main()
