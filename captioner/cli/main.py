"""The `captioner` command: a thin argparse layer over the library.

Every user-facing failure is a :class:`CaptionerError` and becomes one ``captioner: error: ...`` line
and a non-zero exit; batches go on past bad inputs and report them together at the end.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Sequence

from ..errors import CaptionerError

EXIT_ERROR = 2  # the command could not run at all
EXIT_PARTIAL = 1  # it ran, but some inputs failed


def _formatwarning(message, category, filename, lineno, line=None) -> str:  # one line, no source dump
    return f"captioner: warning: {message}\n"


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    from ..devices import add_device_argument
    from ..progress import add_progress_argument

    parser = argparse.ArgumentParser(prog="captioner", description="Show, Attend and Tell image captioning.")
    parser.add_argument("--version", action="version", version=f"captioner {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("caption", help="caption images and draw per-word attention heatmaps")
    p.add_argument("inputs", nargs="*", help="image files or folders; none or '-' reads paths from stdin")
    p.add_argument("--model", default="default", help="shipped model name or checkpoint path (default: default)")
    p.add_argument("--beam", type=int, default=3, help="beam size; 1 = greedy (default 3)")
    p.add_argument("--max-len", type=int, default=20, help="longest caption in words (default 20)")
    p.add_argument("--heatmap", help="write heatmap PNG(s): a .png file for one image, else a folder")
    p.add_argument("--gif", help="write animated GIF(s), one frame per word: a .gif file or a folder")
    p.add_argument("--html", help="write one self-contained HTML report of all images")
    p.add_argument("--json", action="store_true", help="print JSON (caption, score, per-word attention)")
    add_device_argument(p)
    add_progress_argument(p)
    p.add_argument("--batch-size", type=int, default=16, help="images decoded together (default 16)")
    p.add_argument("--hard-mode", choices=["argmax", "expect", "sample"], help="hard attention location at test time")
    p.add_argument("--location-samples", type=int, default=1, metavar="K",
                   help="with --hard-mode sample: K sampled location paths per hypothesis, their word "
                        "probabilities averaged (weighted by how well each path explains the words so far) (default 1)")
    p.add_argument("--no-repeat-ngram", type=int, default=3, metavar="N",
                   help="never repeat an N-gram (nor a word twice in a row) within a caption; 0 = off (default 3)")
    p.add_argument("--erase", action="append", metavar="X,Y,W,H",
                   help="paint this box (the photo's own pixels, after EXIF rotation) in the mean colour before "
                        "captioning, to see what the caption was built on; repeat for several boxes")
    p.add_argument("--sample", action="store_true", help="sample words instead of beam search (use --seed)")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling (default 0)")

    p = sub.add_parser("explain", help="erase what each word looked at and caption again: does the word survive?")
    from .explain import add_arguments as add_explain_arguments

    add_explain_arguments(p)

    p = sub.add_parser("train", help="train a model on COCO / Karpathy / Flickr8k data")
    from .train import add_arguments as add_train_arguments

    add_train_arguments(p)

    p = sub.add_parser("evaluate", help="caption a dataset split and score it (BLEU, METEOR, CIDEr, pointing game)")
    from .evaluate import add_arguments as add_evaluate_arguments

    add_evaluate_arguments(p)

    p = sub.add_parser("synth", help="write a synthetic COCO-style dataset (for tests and grounding)")
    from .synth import add_arguments as add_synth_arguments

    add_synth_arguments(p)

    p = sub.add_parser("models", help="list the installed models with their size and location")
    p.add_argument("--verify", action="store_true", help="check every installed model against its checksum")

    p = sub.add_parser("export", help="turn a training checkpoint into a small shippable model file")
    p.add_argument("source", help="checkpoint file or training run folder")
    p.add_argument("dest", help="the .safetensors file to write")
    p.add_argument("--name", help="model name stored in the file (default: the file name)")
    p.add_argument("--fp32", action="store_true", help="keep float32 tensors (default: fp16, half the size)")
    p.add_argument("--hard-mode", choices=["argmax", "expect", "sample"],
                   help="hard attention's location at test time, stored in the file (default: the checkpoint's)")

    p = sub.add_parser("serve", help="a local web page to caption photos and explore attention")
    from ..web.server import add_arguments as add_serve_arguments

    add_serve_arguments(p)

    p = sub.add_parser("familiarity", help="fit or measure how familiar photos look to a model")
    from .familiarity import add_arguments as add_familiarity_arguments

    add_familiarity_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    warnings.formatwarning = _formatwarning
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_ERROR
    try:
        if args.command == "caption":
            from .caption import run as run_caption

            return run_caption(args)
        if args.command == "explain":
            from .explain import run as run_explain

            return run_explain(args)
        if args.command == "train":
            from .train import run as run_train

            return run_train(args)
        if args.command == "evaluate":
            from .evaluate import run as run_evaluate

            return run_evaluate(args)
        if args.command == "synth":
            from .synth import run as run_synth

            return run_synth(args)
        if args.command == "serve":
            from ..web.server import run as run_serve

            return run_serve(args)
        if args.command == "familiarity":
            from .familiarity import run as run_familiarity

            return run_familiarity(args)
        if args.command == "export":
            from ..model.checkpoint import export_checkpoint

            path = export_checkpoint(args.source, args.dest, half=not args.fp32, name=args.name,
                                     hard_mode=args.hard_mode)
            print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
            return 0
        if args.command == "models":
            from ..model.registry import models_table

            if args.verify:
                from ..model.checkpoint import verify_models

                report, sound = verify_models()
                print(report)
                return 0 if sound else EXIT_PARTIAL
            print(models_table())
            return 0
    except CaptionerError as exc:
        print(f"captioner: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("captioner: interrupted", file=sys.stderr)
        return 130
    return EXIT_ERROR
