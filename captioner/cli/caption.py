"""`captioner caption`: caption files, folders or a list on stdin; draw heatmaps; report every failure.

Images are opened one by one (a bad file is reported, not fatal) and decoded in batches. The exit
status is 0 when every image was captioned, 1 when some failed (the count is printed), 2 when none
could be tried at all (unknown model, bad flags).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..model.search import DecodeOptions
from ..errors import CaptionerError, ConfigError
from ..model.familiarity import print_unfamiliar_note
from ..data.erase import erase, parse_boxes
from ..data.images import find_images, load_image
from ..model.results import caption_entry, error_entry
from ..progress import print_result, progress_bar


def _inputs(args: argparse.Namespace) -> list[str]:
    inputs = list(args.inputs)
    if not inputs or inputs == ["-"]:
        if sys.stdin is None or sys.stdin.isatty():
            raise ConfigError("no images given; pass image files or folders, or a list of paths on stdin")
        inputs = [line.strip() for line in sys.stdin if line.strip()]
        if not inputs:
            raise ConfigError("no images given: stdin held no paths; pass image files or folders, "
                              "or one path per line on stdin")
    return inputs


def _check_target(flag: str, option: str | None, suffix: str, many: bool) -> None:
    """Refuse, before any work, an output that cannot be what the user meant."""
    if not option:
        return
    p = Path(option)
    if many and p.suffix.lower() == suffix:
        raise ConfigError(f"{flag} {option} names one file but several images were given; "
                          f"pass a folder to get one {suffix} per image")
    if (many or p.suffix.lower() != suffix) and p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {option}: exists and is not a folder; pass a folder for the {suffix} files")


def _output_names(paths: list[Path]) -> dict[Path, str]:
    """A distinct file stem per image, so a.jpg, a.png and sub/a.jpg never overwrite each other's heatmap.

    An image whose stem is unique keeps it; clashing ones are named by their path below the images'
    common folder (``sub_a_jpg``), with a counter as the last resort.
    """
    stems: dict[str, int] = {}
    for p in paths:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    try:
        root = Path(os.path.commonpath([str(p.resolve().parent) for p in paths])) if paths else Path(".")
    except ValueError:  # different drives on Windows
        root = Path("/")
    names: dict[Path, str] = {}
    used: set[str] = set()
    for p in paths:
        if stems[p.stem] == 1:
            name = p.stem
        else:
            name = "_".join(p.resolve().relative_to(root).parts).replace(".", "_")
        base, i = name, 2
        while name in used:
            name, i = f"{base}-{i}", i + 1
        used.add(name)
        names[p] = name
    return names


def _target(option: str | None, name: str, suffix: str, many: bool) -> Path | None:
    """``--heatmap x.png`` for one image; a folder (one file per image) otherwise."""
    if not option:
        return None
    p = Path(option)
    if not many and p.suffix.lower() == suffix:
        return p
    return p / f"{name}{suffix}"


def _erased(image, boxes):
    """``(photo, boxes applied)``: with ``--erase``, the photo with its boxes painted over (None: no erasing)."""
    return (image, None) if boxes is None else erase(image, boxes)


def _write(out: Path, render, *args, **kwargs) -> None:
    """Run a renderer; an unwritable output is one clear error, not a traceback."""
    try:
        render(*args, **kwargs)
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror or exc}; choose another output path") from None


def run(args: argparse.Namespace) -> int:
    from ..model.caption_model import load_model
    from ..heatmaps import render_gif, render_heatmap, render_html_report

    if args.beam < 1:
        raise ConfigError(f"--beam must be at least 1, got {args.beam}")
    if args.no_repeat_ngram < 0:
        raise ConfigError(f"--no-repeat-ngram must be 0 (off) or more, got {args.no_repeat_ngram}")
    if args.max_len < 1:
        raise ConfigError(f"--max-len must be at least 1, got {args.max_len}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    paths, problems = find_images(_inputs(args))
    many = len(paths) > 1 or any(Path(a).is_dir() for a in args.inputs)
    _check_target("--heatmap", args.heatmap, ".png", many)
    _check_target("--gif", args.gif, ".gif", many)
    if args.html and Path(args.html).is_dir():
        raise ConfigError(f"--html {args.html}: is a folder; pass a file name such as report.html")
    names = _output_names(paths)
    boxes = parse_boxes(args.erase or [], "--erase") if args.erase else None
    model = load_model(args.model, device=args.device)
    opts = DecodeOptions(beam=args.beam, max_len=args.max_len, hard_mode=args.hard_mode, sample=args.sample,
                         location_samples=args.location_samples, seed=args.seed, no_repeat_ngram=args.no_repeat_ngram)
    entries: list[dict] = [error_entry(p, msg, model.name) for p, msg in problems]
    failures = [msg for _, msg in problems]
    with progress_bar(len(paths), "caption", enabled=args.progress) as bar:
        for start in range(0, len(paths), args.batch_size):
            chunk = paths[start : start + args.batch_size]
            opened = []
            for p in chunk:
                try:
                    opened.append((p, *_erased(load_image(p), boxes)))
                except CaptionerError as exc:
                    failures.append(str(exc))
                    entries.append(error_entry(str(p), str(exc), model.name))
                    bar.update(1)
            if not opened:
                continue
            results = model.caption_images([im for _, im, _ in opened], opts)
            for (p, im, applied), res in zip(opened, results):
                res.erased = applied
                entry = caption_entry(str(p), res, model.name, model.cfg.grid)
                entries.append(entry)
                if not args.json:
                    print_result(f"{p}\t{res.caption}")
                print_unfamiliar_note(str(p), res, model)
                locs = [tuple(w["location"]) for w in entry["words"]] if res.locations is not None else None
                grids = [res.alphas[t].reshape(model.cfg.grid, model.cfg.grid) for t in range(len(res.words))]
                out = _target(args.heatmap, names[p], ".png", many)
                if out:
                    _write(out, render_heatmap, im, res.words, grids, out, locations=locs, caption=res.caption)
                out = _target(args.gif, names[p], ".gif", many)
                if out:
                    _write(out, render_gif, im, res.words, grids, out, locations=locs)
                bar.update(1)
    if args.json:
        print(json.dumps(entries))
    if args.html:
        _write(Path(args.html), render_html_report, entries, args.html)
    if failures:
        for msg in failures:
            print(f"captioner: error: {msg}", file=sys.stderr)
        total = len(paths) + len(problems)
        print(f"captioner: {len(failures)} of {total} inputs failed", file=sys.stderr)
        return 1
    return 0
