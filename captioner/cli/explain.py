"""`captioner explain`: for each content word of a photo's caption, erase what it looked at and caption again.

A per-photo faithfulness report a person can read (text), a script can parse (``--json``, schema in
docs/json.md) or look through (``--html``: the photo, then each word's two erased photos with their new
captions). Bad inputs are reported at the end; the exit status is 1 when some failed, 2 when none could run.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path

from ..atomic import write_text
from ..data.erase import erase
from ..data.images import find_images, load_image
from ..devices import add_device_argument
from ..errors import CaptionerError, ConfigError
from ..evaluation.explain import Explanation, explain, report_text
from ..model.search import DecodeOptions
from ..progress import add_progress_argument, print_result, progress_bar


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--model", default="default", help="shipped model name or checkpoint path (default: default)")
    p.add_argument("--beam", type=int, default=3, help="beam size; 1 = greedy (default 3)")
    p.add_argument("--cells", type=int, metavar="K",
                   help="cells erased per word (default: 10%% of the grid, as in evaluate --faithfulness)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random cells erased for comparison (default 0)")
    p.add_argument("--json", action="store_true", help="print a JSON list, one report per photo")
    p.add_argument("--html", help="also write a self-contained HTML report to this file")
    add_device_argument(p)
    add_progress_argument(p)


def run(args: argparse.Namespace) -> int:
    from ..model.caption_model import load_model

    if args.beam < 1:
        raise ConfigError(f"--beam must be at least 1, got {args.beam}")
    if args.html and Path(args.html).is_dir():
        raise ConfigError(f"--html {args.html}: is a folder; pass a file name such as explain.html")
    paths, problems = find_images(args.inputs)
    model = load_model(args.model, device=args.device)
    n_cells = model.cfg.grid ** 2
    if args.cells is not None and not 1 <= args.cells <= n_cells:
        raise ConfigError(f"--cells must be between 1 and the {n_cells} attention cells, got {args.cells}")
    opts = DecodeOptions(beam=args.beam)
    failures = [msg for _, msg in problems]
    reports: list[tuple[Explanation, object]] = []
    with progress_bar(len(paths), "explain", enabled=args.progress) as bar:
        for p in paths:
            try:
                image = load_image(p)
                report = explain(model, image, str(p), opts, cells=args.cells, seed=args.seed)
            except CaptionerError as exc:
                failures.append(str(exc))
            else:
                reports.append((report, image))
                if not args.json:
                    print_result(report_text(report))
            bar.update(1)
    if args.json:
        print(json.dumps([r.as_dict() for r, _ in reports]))
    if args.html and reports:
        try:
            write_text(args.html, report_html(reports))
        except OSError as exc:
            raise ConfigError(f"cannot write {args.html}: {exc.strerror or exc}; choose another path") from None
    for msg in failures:
        print(f"captioner: error: {msg}", file=sys.stderr)
    if failures:
        print(f"captioner: {len(failures)} of {len(paths) + len(problems)} inputs failed", file=sys.stderr)
        return 1
    return 0


_CSS = ("body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}section{margin-bottom:2em}"
        "figure{display:inline-block;margin:.3em;vertical-align:top;max-width:260px}"
        "figure img{max-width:256px;display:block}figcaption{font-size:.9em}.gone{color:#b00;font-weight:bold}"
        ".kept{color:#070}")


def report_html(reports: list[tuple[Explanation, object]]) -> str:
    """One self-contained page: each photo, then per content word its photo erased where it looked and at
    random, with the captions that came out."""
    from ..heatmaps import data_uri
    from ..heatmaps.overlay import thumbnail

    def figure(image, boxes, caption: str, verdict: str, title: str) -> str:
        erased, _ = erase(image, [tuple(b) for b in boxes])
        mark = "kept" if verdict == "kept" else "gone"
        return (f'<figure><img src="{data_uri(thumbnail(erased))}" alt="{html.escape(title)}"><figcaption>'
                f'{html.escape(title)}: <span class="{mark}">{verdict}</span><br>{html.escape(caption)}'
                "</figcaption></figure>")

    parts = []
    for report, image in reports:
        s = report.summary()
        rows = [f'<h2>{html.escape(report.image)}</h2><p>{html.escape(report.caption)}</p>',
                f'<figure><img src="{data_uri(thumbnail(image))}" alt="photo"></figure>',
                f"<p>{s['gone_attended']} of {s['content_words']} words gone when what they looked at is erased; "
                f"{s['gone_random']} with as many random cells ({report.cells} of {report.grid ** 2} cells).</p>"]
        for w in report.words:
            rows.append(f"<h3>{html.escape(w.word)}</h3>" +
                        figure(image, w.attended.boxes, w.attended.caption,
                               "kept" if w.attended.survives else "GONE", "erasing what it looked at") +
                        figure(image, w.random.boxes, w.random.caption,
                               "kept" if w.random.survives else "GONE", "erasing random cells"))
        parts.append("<section>" + "".join(rows) + "</section>")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>captioner explain</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")
