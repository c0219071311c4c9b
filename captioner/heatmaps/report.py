"""A self-contained HTML report of many captioned photos: every word's map, one file, no network."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..atomic import write_text
from ..errors import ConfigError, ImageError
from .overlay import (
    attention_scale,
    check_scale,
    colour_lut,
    overlay,
    prepare_maps,
    thumbnail,
)


def data_uri(img: Image.Image, quality: int = 85) -> str:
    """A JPEG data URI: reports and pages carry their images inside them and load nothing from outside."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:1em;margin-bottom:1.5em}
section.failed{border-color:#c33;background:#fff4f4}
h2{font-size:1em;margin:0 0 .4em;word-break:break-all}
.caption{font-size:1.2em;margin:.3em 0}
.words .w{cursor:pointer;padding:0 .1em;border-radius:3px}
.words .w.on,.words .w:hover{background:#ffd54f}
.meta{color:#666;font-size:.85em}
.error{color:#a00;font-weight:bold}
.panels{display:flex;flex-wrap:wrap;gap:8px;margin-top:.6em}
figure{margin:0;text-align:center;border:2px solid transparent;border-radius:4px}
figure.on{border-color:#ffb300}
figcaption{font-size:.9em}
figcaption small{display:block;color:#666;font-size:.85em}
"""


# Hovering or clicking a word in the caption highlights its panel, and the reverse.
_JS = """
document.querySelectorAll('[data-w]').forEach(function(el){
  function mark(on){
    el.closest('section').querySelectorAll('[data-w="'+el.dataset.w+'"]').forEach(function(x){
      x.classList.toggle('on',on);});}
  el.addEventListener('mouseenter',function(){mark(true);});
  el.addEventListener('mouseleave',function(){mark(false);});
  el.addEventListener('click',function(){
    var f=el.closest('section').querySelector('figure[data-w="'+el.dataset.w+'"]');
    if(f){f.scrollIntoView({block:'nearest',behavior:'smooth'});}});
});
"""


def _failed(head: str, message: str) -> tuple[str, bool]:
    return f'<section class="failed">{head}<p class="error">failed: {html.escape(message)}</p></section>', True


def _entry_html(entry: Any, lut: np.ndarray, opacity: float, image_root: Path | None,
                scale: str = "caption") -> tuple[str, bool]:
    """One report section and whether it failed; a bad entry is shown as failed, never raised."""
    if not isinstance(entry, dict):
        return _failed("", f"malformed entry (expected an object): {repr(entry)[:200]}")
    head = f"<h2>{html.escape(str(entry.get('image', '(no image path)')))}</h2>"
    if entry.get("error"):
        return _failed(head, str(entry["error"]))
    words_in = entry.get("words") or []
    if not isinstance(entry.get("image"), str):
        return _failed(head, 'entry has no "image" path')
    if not isinstance(words_in, list) or not all(isinstance(w, dict) for w in words_in):
        return _failed(head, '"words" must be a list of {"word", "attention"} objects')
    words = [str(w.get("word", "")) for w in words_in]
    try:
        thumb = thumbnail(image_root / entry["image"] if image_root else entry["image"])
        grids, locs = prepare_maps(words, [w.get("attention") for w in words_in],
                               [w.get("location") for w in words_in])
        sc = attention_scale(grids, scale)
        legend = f"<small>{html.escape(sc.legend())}</small>" if words else ""
        figures = [f'<figure><img src="{data_uri(thumb)}" alt="input"><figcaption>input{legend}</figcaption>'
                   "</figure>"]
        for i, (word, grid, loc) in enumerate(zip(words, grids, locs)):
            uri = data_uri(overlay(thumb, grid, loc, opacity=opacity, lut=lut, vmax=sc.top))
            figures.append(f'<figure data-w="{i}" data-peak="{sc.peaks[i]!r}" data-image-weight='
                           f'"{sc.image_weights[i]!r}"><img src="{uri}" alt="{html.escape(word)}">'
                           f"<figcaption>{html.escape(word)}<small>{html.escape(sc.label(i))}</small>"
                           "</figcaption></figure>")
    except (ImageError, ConfigError) as exc:
        return _failed(head, str(exc))
    caption = html.escape(str(entry.get("caption", " ".join(words))))
    spans = " ".join(f'<span class="w" data-w="{i}">{html.escape(w)}</span>' for i, w in enumerate(words))
    meta = []
    if isinstance(entry.get("score"), (int, float)):
        meta.append(f"score {entry['score']:.3f}")
    if isinstance(entry.get("familiarity"), (int, float)):
        from ..model.familiarity import familiarity_text

        meta.append(html.escape(familiarity_text(float(entry["familiarity"]))))
    if entry.get("model"):
        meta.append(f"model {html.escape(str(entry['model']))}")
    return (f'<section>{head}<p class="caption">{caption}</p><p class="meta">{" · ".join(meta)}</p>'
            f'<p class="words">{spans}</p>'
            f'<div class="panels" data-vmax="{sc.vmax!r}" data-scale="{sc.scale}">{"".join(figures)}</div>'
            "</section>"), False


def render_html_report(entries: Sequence[dict], out_path: str | os.PathLike, title: str = "captioner report", *,
                       cmap: str = "jet", opacity: float = 0.7,
                       image_root: str | os.PathLike | None = None, scale: str = "caption") -> Path:
    """Write one self-contained HTML page (images inline as data URIs) from ``caption --json`` entries.

    Relative ``"image"`` paths are read from ``image_root`` when given (e.g. where ``caption`` ran),
    else from the current directory. Each caption's panels share its colour scale (``scale="word"``:
    each its own), and each word is labelled with its peak (and, if any is below 1, image) weight.

    Entries with an ``"error"``, a missing image or malformed attention appear as failed sections,
    so one bad image never loses the rest of a batch's report.
    """
    check_scale(scale)  # a bad option is the caller's error, not one failed section per entry
    lut = colour_lut(cmap)
    root = Path(image_root) if image_root is not None else None
    rendered = [_entry_html(e, lut, opacity, root, scale) for e in entries]
    sections = "\n".join(text for text, _ in rendered)
    n_failed = sum(failed for _, failed in rendered)
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p class=\"meta\">{len(entries)} images, {n_failed} failed. "
        "Hover a word to highlight where the model looked.</p>\n"
        f"{sections}\n<script>{_JS}</script></body></html>\n"
    )
    write_text(out_path, page)
    return Path(out_path)
