"""How concentrated is attention, and how much does the decoder let the context in?
``python benchmarks/bench_attention_stats.py --model flickr8k-soft --model flickr8k-hard --images FOLDER``

Greedy-captions the first ``--limit`` photos of a folder with each model and reports, averaged over
every word: the largest attention weight (1/L for uniform attention over L cells), the entropy of the
attention (log L when uniform) and the context gate sigma(f_beta(h_{t-1})) that scales the context
before it enters the LSTM. Hard attention only helps when one cell can stand for what a word needs
(large weights), and the words only depend on where the model looked while the gate is open: a gate
near 0 means the caption comes from the start state (the mean image) and the language model.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import torch  # noqa: E402

from captioner.model.attention import entropy  # noqa: E402
from captioner.model.search import DecodeOptions  # noqa: E402
from captioner.data.images import is_image_name, load_image  # noqa: E402
from captioner.model.caption_model import CaptionModel, load_model  # noqa: E402


def attention_stats(model: CaptionModel, images: list, beam: int = 1) -> dict[str, float]:
    """Mean peak weight, entropy and context gate over every decoding step of ``images``."""
    dec = model.decoder
    peaks, entropies, gates = [], [], []
    step = dec.step

    def probed(h, c, memory, emb, pre, **kw):
        out = step(h, c, memory, emb, pre, **kw)
        alpha = out.alpha.float()
        peaks.append(alpha.max(1).values)
        entropies.append(entropy(alpha))
        gates.append(torch.sigmoid(dec.f_beta(h)).float().squeeze(1))
        return out

    dec.step = probed
    try:
        with torch.no_grad():
            model.caption_images(images, DecodeOptions(beam=beam))
    finally:
        del dec.step  # the instance attribute only; the class method is back
    cells = model.cfg.grid ** 2
    return {"peak": float(torch.cat(peaks).mean()), "entropy": float(torch.cat(entropies).mean()),
            "gate": float(torch.cat(gates).mean()), "uniform_peak": 1.0 / cells, "uniform_entropy": math.log(cells)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True, help="model name or checkpoint (repeatable)")
    p.add_argument("--images", required=True, help="folder of photos")
    p.add_argument("--limit", type=int, default=12, help="first N photos in name order (default 12)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = sorted(f for f in Path(args.images).iterdir() if is_image_name(f))[: args.limit]
    if not paths:
        sys.exit(f"bench_attention_stats: no images in {args.images}")
    images = [load_image(f) for f in paths]
    print(f"# {len(images)} photos from {args.images}, greedy decoding, means over every word")
    print("| model | peak weight | entropy | context gate |")
    print("| --- | --- | --- | --- |")
    for name in args.model:
        s = attention_stats(load_model(name), images)
        print(f"| {name} | {s['peak']:.3f} (uniform {s['uniform_peak']:.3f}) | {s['entropy']:.2f} "
              f"(uniform {s['uniform_entropy']:.2f}) | {s['gate']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
