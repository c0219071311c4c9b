"""Per-word attention heatmaps as a PNG figure and an animated GIF: where the model looked for each word.

Laid out like Xu et al. (2015), Fig. 2/3: the input image first, then one panel per generated word
with that step's attention map upsampled smoothly to the image and blended over it (the maps come from
:mod:`captioner.heatmaps.overlay`, as the HTML report's and the web page's do). Matplotlib is used only through ``Figure`` + ``FigureCanvasAgg`` (never
``pyplot``), so rendering holds no global state and can run in a web server's worker threads.
"""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..atomic import atomic_path
from ..errors import ConfigError
from .overlay import (
    Alphas,
    ImageLike,
    attention_scale,
    colour_lut,
    overlay,
    prepare_maps,
    thumbnail,
)

# -------------------------------------------------------------------------------------------- PNG


def layout(n_panels: int, cols: int) -> tuple[int, int]:
    """Grid (rows, cols) that holds ``n_panels`` panels at most ``cols`` wide."""
    if cols < 1:
        raise ConfigError(f"cols must be at least 1, got {cols}")
    if n_panels < 1:
        raise ConfigError(f"need at least one panel, got {n_panels}")
    used = min(cols, n_panels)
    return math.ceil(n_panels / used), used


def _title(word: str, label: str, fits: Callable[[str], bool]) -> list[str]:
    """``["word · label"]`` when that fits the panel width, else the label on a line of its own."""
    one = f"{word} · {label}"
    return [one] if fits(one) else [word, label]


def render_heatmap(image: ImageLike, words: Sequence[str], alphas: Alphas, out_path: str | os.PathLike,
                   locations: Sequence[tuple[int, int]] | None = None, caption: str | None = None,
                   cols: int = 5, *, cmap: str = "jet", opacity: float = 0.7, dpi: int = 100,
                   scale: str = "caption") -> Path:
    """Write the paper-style figure: the image, then one titled overlay panel per word, as a PNG.

    Panels share the caption's colour scale (``scale="word"``: each its own); titles carry each
    word's peak weight, so the figure says how sure the model was, not only where it looked.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    grids, locs = prepare_maps(words, alphas, locations)
    sc = attention_scale(grids, scale)
    rows, cols = layout(1 + len(words), cols)
    thumb = thumbnail(image)
    lut = colour_lut(cmap)
    panels = [thumb] + [overlay(thumb, g, loc, opacity=opacity, lut=lut, vmax=sc.top)
                        for g, loc in zip(grids, locs)]

    font_pt = 11
    chars = max(8, int(thumb.width / (font_pt * 0.62 * dpi / 72)))
    measure = _font(round(font_pt * dpi / 72))  # DejaVu Sans, matplotlib's default face

    def fits(text: str) -> bool:
        return measure.getlength(text) <= thumb.width

    titles = [textwrap.fill(caption or "input", chars) + ("\n" + sc.legend() if words else "")]
    titles += ["\n".join(_title(str(w), sc.label(i), fits)) for i, w in enumerate(words)]
    # Each row reserves room for its own tallest title, so a long wrapped caption only widens row 1.
    lines = [max(t.count("\n") + 1 for t in titles[r * cols:(r + 1) * cols]) for r in range(rows)]
    title_px = [round((n * font_pt * 1.3 / 72 + 0.06) * dpi) for n in lines]
    pw, ph, gap = thumb.width, thumb.height, round(0.12 * dpi)          # pixels
    fig_w, fig_h = gap + cols * (pw + gap), gap + sum(title_px) + rows * (ph + gap)

    # Panels are already at their final pixel size, so they are placed with figimage (no resampling,
    # much faster than one imshow axes per word); titles are plain figure text above each panel.
    fig = Figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    for k, (panel, title) in enumerate(zip(panels, titles)):
        r, c = divmod(k, cols)
        left = gap + c * (pw + gap)
        top = gap + sum(title_px[: r + 1]) + r * (ph + gap)           # from the figure's top edge
        fig.figimage(np.asarray(panel), xo=left, yo=fig_h - top - ph, origin="upper")
        fig.text((left + pw / 2) / fig_w, 1 - (top - 3) / fig_h, title, ha="center", va="bottom",
                 fontsize=font_pt, parse_math=False, multialignment="center")
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")
    return Path(out_path)


# -------------------------------------------------------------------------------------------- GIF


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        import matplotlib

        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf"), size)
    except (ImportError, OSError):
        try:
            return ImageFont.load_default(size=size)
        except TypeError:  # Pillow built without FreeType
            return ImageFont.load_default()


def render_gif(image: ImageLike, words: Sequence[str], alphas: Alphas, out_path: str | os.PathLike,
               locations: Sequence[tuple[int, int]] | None = None, duration_ms: int = 700, *,
               cmap: str = "jet", opacity: float = 0.7, scale: str = "caption") -> Path:
    """Write an animated GIF, one frame per word: the overlay with "word · peak p%  (t/T)" under it.

    Frames share the caption's colour scale (``scale="word"``: each its own), so a flat map does not
    flash as brightly as a peaked one. The step counter keeps every frame distinct, so GIF encoders
    never merge two identical frames and the frame count always equals the word count. With no
    words, the plain image is one frame.
    """
    if duration_ms < 1:
        raise ConfigError(f"duration_ms must be positive, got {duration_ms}")
    grids, locs = prepare_maps(words, alphas, locations)
    sc = attention_scale(grids, scale)
    thumb = thumbnail(image)
    lut = colour_lut(cmap)
    font = _font(max(12, thumb.width // 14))
    line_px = int(font.size * 1.3) if hasattr(font, "size") else 16

    def fits(text: str) -> bool:
        return font.getlength(text) <= thumb.width - 4

    n = len(words)
    labels = [_title(w, f"{sc.label(t)}  ({t + 1}/{n})", fits) for t, w in enumerate(words)] or [["(no words)"]]
    bar = line_px * max(len(lines) for lines in labels) + line_px // 3  # one height for every frame
    frames = []
    for t, lines in enumerate(labels):
        panel = overlay(thumb, grids[t], locs[t], opacity=opacity, lut=lut, vmax=sc.top) if grids else thumb
        frame = Image.new("RGB", (thumb.width, thumb.height + bar), "white")
        frame.paste(panel, (0, 0))
        draw = ImageDraw.Draw(frame)
        top = thumb.height + (bar - line_px * len(lines)) / 2
        for k, line in enumerate(lines):
            draw.text((thumb.width / 2, top + (k + 0.5) * line_px), line, fill="black", font=font, anchor="mm")
        frames.append(frame.quantize(colors=256, method=Image.Quantize.MEDIANCUT))
    with atomic_path(out_path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms,
                       loop=0, disposal=1)
    return Path(out_path)
