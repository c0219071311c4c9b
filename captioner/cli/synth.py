"""``captioner synth``: write a synthetic COCO-style dataset from the command line."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

from ..data.synth import DEFAULT_STYLE, STYLES, generate
from ..errors import ConfigError


def styles_table() -> str:
    """One line per style, name then description: what ``--list-styles`` prints."""
    width = max(map(len, STYLES))
    return "\n".join(f"{name:<{width}}  {style.description}" for name, style in STYLES.items())


class _ListStyles(argparse.Action):
    """``--list-styles``: print the styles and exit, like ``--version`` (no ``--out`` needed)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        print(styles_table())
        parser.exit()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags for ``captioner synth``."""
    parser.add_argument("--out", required=True, help="new (or empty) folder to write the dataset into")
    parser.add_argument("--images", type=int, default=1000, help="number of images (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files (default 0)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per CPU for big runs)")
    parser.add_argument("--splits", default="0.8,0.1,0.1", help="train,val,test fractions (default 0.8,0.1,0.1)")
    parser.add_argument("--style", default=DEFAULT_STYLE,
                        help=f"image style, a comma-separated mix (each image draws one), or 'all' "
                             f"(default {DEFAULT_STYLE}; see --list-styles)")
    parser.add_argument("--list-styles", action=_ListStyles, nargs=0, help="print the styles and exit")


def run(args: argparse.Namespace) -> int:
    """Run ``captioner synth`` and print a one-line summary."""
    try:
        fractions = tuple(float(f) for f in str(args.splits).split(","))
    except ValueError:
        raise ConfigError(f"synth: --splits must be three comma-separated numbers like 0.8,0.1,0.1, "
                          f"got {args.splits!r}") from None
    start = time.perf_counter()
    summary = generate(args.out, args.images, seed=args.seed, image_size=args.size,
                       split_fractions=fractions, workers=args.workers,  # type: ignore[arg-type]
                       progress=sys.stderr.isatty(), style=args.style)
    parts = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
    styles = ""
    if list(summary["styles"]) != [DEFAULT_STYLE]:
        styles = "; styles: " + ", ".join(f"{k} {v}" for k, v in summary["styles"].items())
    print(f"synth: wrote {summary['images']} images ({parts}{styles}) to {summary['out']} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0
