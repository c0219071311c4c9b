"""Progress bars on stderr, and only for a person watching: caption, evaluate, train and feature caching.

stdout carries results (caption lines, JSON, score tables) that scripts read, so a bar never goes
there; and a bar written into a log file or a pipe is noise (``captioner train ... 2> log`` would fill
the log with bar frames), so it appears only when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # tqdm itself is imported when a bar is made: building the parser stays fast
    from tqdm import tqdm


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """``--progress/--no-progress``, the flag `captioner train` has too."""
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="show a progress bar on stderr when stderr is a terminal (default: on)")


def progress_bar(total: int, desc: str, unit: str = "image", enabled: bool = True) -> tqdm:
    """A bar on stderr, drawn only when ``enabled`` and stderr is a terminal (else a silent stand-in)."""
    from tqdm import tqdm

    shown = enabled and sys.stderr is not None and sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not shown, dynamic_ncols=True)


def print_result(line: str) -> None:
    """A line of results on stdout, flushed for pipes; a bar on the same terminal is lifted out of its way."""
    from tqdm import tqdm

    with tqdm.external_write_mode(file=sys.stdout):
        print(line, flush=True)
