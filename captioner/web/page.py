"""The one HTML page of ``captioner serve``: inline CSS and JS only, so it works with no internet at all.

Kept apart from the server code so each file reads on its own. The page asks the JSON endpoint for
each selected model (with ``overlays=1``: the server renders every word's heatmap with
:func:`captioner.visualize.overlay`, the same code as the PNG/GIF/HTML outputs) and swaps the
heatmap over the photo when a word is hovered, focused or clicked; the explorer
(:mod:`captioner.web.explorer_js`) erases parts of the photo through the API's ``erase`` field and
shows which words looked at a point. All heatmaps of one caption share
its colour scale (0 .. the caption's max α, as in the files), and the page writes each word's peak
(and, for a visual-sentinel model, image) weight with ``pct()``, the twin of
:func:`captioner.visualize.percent`, from the ``peak``/``image_weight`` figures the server sends.
"""

from __future__ import annotations

import html
import json
from typing import Any

from .explorer_js import JS as _EXPLORER_JS
from .page_css import CSS as _CSS
from .page_js import JS as _PAGE_JS

_JS = _PAGE_JS + _EXPLORER_JS  # one script: the explorer uses the page's helpers

_BODY = """
<header><h1>captioner</h1>
<p>Caption a photo and see where the model looked for each word (Show, Attend and Tell).</p></header>
<main>
<label class="drop" id="drop"><input type="file" id="file" class="visually-hidden" accept="image/*">
<span><strong>Drop a photo here</strong> or click to choose one<br><small>JPEG, PNG, WebP, GIF, BMP or TIFF,
up to {limit}</small></span></label>
<div class="demos" id="demos"><span>or try a demo photo:</span><span id="demo-list" class="demos"></span></div>
<div class="controls">
<label>model <select id="model"></select></label>
<label id="compare-label">compare with <select id="compare"><option value="">(none)</option></select></label>
<label>beam size <select id="beam"></select></label>
</div>
<div id="error" role="alert" hidden></div>
<p id="status" aria-live="polite"></p>
<div id="eraser" class="eraser" role="toolbar" aria-label="eraser" hidden><strong>Eraser</strong>
<span id="eraser-count">no boxes yet</span><span class="hint">drag on a photo to grey a box (or arrow keys and
Enter on a focused photo); the grey button after a word erases what it looked at</span>
<button type="button" id="erase-undo">Undo</button><button type="button" id="erase-reset">Reset</button>
<button type="button" id="erase-run" class="primary">Caption the edited photo</button></div>
<div id="results"></div>
</main>
"""


def size_text(n: int) -> str:
    """Bytes as people read them; the page's sizeText() writes the same."""
    return f"{n / 1048576:.3g} MB" if n >= 1048576 else f"{max(1, round(n / 1024))} KB"


def render_page(config: dict[str, Any], nonce: str) -> str:
    """The whole page; ``config`` (models, demos, limits) is embedded as JSON, scripts carry ``nonce``."""
    data = json.dumps(config).replace("<", "\\u003c")  # never lets a name close the <script> element
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1"><title>captioner</title>'
        '<link rel="icon" href="data:,">'
        f'<style nonce="{nonce}">{_CSS}</style></head><body>'
        + _BODY.format(limit=html.escape(size_text(int(config["max_upload_bytes"]))))
        + f'<script id="config" type="application/json">{data}</script>'
        f'<script nonce="{nonce}">{_JS}</script></body></html>\n'
    )
