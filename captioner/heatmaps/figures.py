"""Per-word attention heatmaps: where the model looked while it said each word.

Laid out like Xu et al. (2015), Fig. 2/3: the input image first, then one panel per generated word
with that step's attention map upsampled smoothly to the image and blended over it. The same
overlay code feeds the PNG figure, the animated GIF and the self-contained HTML report, so the
three always agree. All panels of one caption share one colour scale, 0 .. the caption's largest
attention weight (:func:`attention_scale`), so a flat map looks flat beside a peaked one; each word
is labelled with its peak weight and, when some word's map sums to less than 1 (a visual-sentinel
model), its image weight. Matplotlib is used only through ``Figure`` + ``FigureCanvasAgg`` (never
``pyplot``), so rendering holds no global state and can run in a web server's worker threads.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import ConfigError, ImageError
from ..data.images import load_image
from ..atomic import atomic_path, write_text

#: Longest side, in pixels, of each panel; big photos are shrunk first so rendering stays fast.
PANEL_PX = 256
_RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
             "bicubic": Image.Resampling.BICUBIC}

ImageLike = Image.Image | str | os.PathLike
Alphas = np.ndarray | Sequence[Any]

#: Colour scales: "caption" (default) shares 0 .. the caption's max α over all panels; "word" stretches
#: each panel to its own min .. max (the old look: every map looks equally confident).
SCALES = ("caption", "word")
#: Image weights (row sums) are shown only when some word's is below this: rows of ordinary models sum
#: to 1; a visual-sentinel model's rows sum to 1 − the sentinel's weight.
IMAGE_WEIGHT_SHOWN_BELOW = 0.995


# --------------------------------------------------------------------------------------------- maps


def _as_grid(alpha: Any, what: str = "attention map") -> np.ndarray:
    """Return ``alpha`` as a finite, non-negative gh×gw float array (a flat L vector must be square)."""
    try:
        a = np.asarray(alpha, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: not a numeric grid; pass a gh×gw array of attention weights") from None
    if a.ndim == 1:
        side = math.isqrt(a.size)
        if a.size == 0 or side * side != a.size:
            raise ConfigError(f"{what}: flat map of {a.size} weights is not a square grid; pass it as gh×gw")
        a = a.reshape(side, side)
    if a.ndim != 2 or a.size == 0:
        raise ConfigError(f"{what}: expected a 2-D gh×gw grid, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ConfigError(f"{what}: contains NaN or infinite weights; check the model output")
    if np.any(a < 0):
        raise ConfigError(f"{what}: contains negative weights; attention must be a softmax output")
    return a


def _resize(alpha: Any, size: tuple[int, int], resample: str = "bicubic") -> np.ndarray:
    """The raw attention weights interpolated to ``size = (height, width)``, not rescaled."""
    if resample not in _RESAMPLE:
        raise ConfigError(f"unknown resample {resample!r}; choose one of {', '.join(_RESAMPLE)}")
    height, width = (int(s) for s in size)
    if height < 1 or width < 1:
        raise ConfigError(f"upsample size must be positive (height, width), got {size}")
    field = Image.fromarray(_as_grid(alpha).astype(np.float32), mode="F")
    return np.asarray(field.resize((width, height), _RESAMPLE[resample]), dtype=np.float32)


def upsample_attention(alpha: np.ndarray, size: tuple[int, int], resample: str = "bicubic",
                       vmax: float | None = None) -> np.ndarray:
    """Upsample a gh×gw attention grid to ``size = (height, width)`` and scale it to [0, 1].

    Interpolation uses pixel centres (like ``align_corners=False``), so each grid cell maps onto its
    own patch of the image; the pointing game relies on the peak landing inside the peak cell's patch.
    With ``vmax`` the weights are divided by it (0 .. vmax -> 0 .. 1: a shared, honest scale); without
    it the map is stretched to its own min .. max, and a flat (uniform) map comes back as all zeros.
    """
    up = _resize(alpha, size, resample)
    height, width = up.shape
    if vmax is not None:
        if not vmax > 1e-12:  # nothing attended anywhere (or NaN): no colour at all
            return np.zeros((height, width), dtype=np.float32)
        return np.clip(up / np.float32(vmax), 0.0, 1.0)  # bicubic can overshoot slightly
    lo, hi = float(up.min()), float(up.max())
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return np.zeros((height, width), dtype=np.float32)
    return np.clip((up - lo) / (hi - lo), 0.0, 1.0)  # bicubic can overshoot slightly


def percent(x: float) -> str:
    """``x`` (0..1) as a short percentage, rounded half up like the web page's ``pct()`` so both agree."""
    p = float(x) * 100.0
    whole = math.floor(p + 0.5)
    if whole >= 1:
        return f"{whole}%"
    tenth = math.floor(p * 10.0 + 0.5) / 10.0  # small weights (big grids) keep one decimal
    return f"{tenth:.1f}%" if tenth > 0 else "0%"


@dataclass(frozen=True)
class AttentionScale:
    """One caption's colour scale and per-word figures, computed once for the PNG, GIF, HTML and web page."""

    vmax: float                       # largest α of any cell over all words: the top of the shared scale
    peaks: tuple[float, ...]          # max α of each word
    image_weights: tuple[float, ...]  # Σ α of each word: 1, or 1 − sentinel weight
    scale: str = "caption"

    @property
    def show_image_weight(self) -> bool:
        """Whether image weights are worth printing: only when some word looked partly away from the image."""
        return any(w < IMAGE_WEIGHT_SHOWN_BELOW for w in self.image_weights)

    @property
    def top(self) -> float | None:
        """The ``vmax`` to draw every panel with; ``None`` stretches each panel to its own range."""
        return self.vmax if self.scale == "caption" else None

    def label(self, i: int) -> str:
        """Word ``i``'s figures, e.g. ``peak 31%`` or ``peak 31% · img 62%`` (the web page writes the same)."""
        text = f"peak {percent(self.peaks[i])}"
        return text + f" · img {percent(self.image_weights[i])}" if self.show_image_weight else text

    def legend(self) -> str:
        """What the colours mean, for the input panel: a flat map only looks flat if the reader knows."""
        return f"colour scale 0–{percent(self.vmax)}" if self.scale == "caption" else "colour scale: per word"


def _check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    return scale


def attention_scale(grids: Sequence[Any], scale: str = "caption") -> AttentionScale:
    """The caption-wide scale of validated maps: max α over all cells of all words, and per-word figures."""
    _check_scale(scale)
    arrays = [np.asarray(g, dtype=np.float64) for g in grids]
    peaks = tuple(float(a.max()) for a in arrays)
    return AttentionScale(vmax=max(peaks, default=0.0), peaks=peaks,
                          image_weights=tuple(float(a.sum()) for a in arrays), scale=scale)


def _colour_lut(cmap: str) -> np.ndarray:
    from matplotlib import colormaps  # lazy: keeps `import captioner.visualize` cheap

    try:
        cm = colormaps[cmap]
    except KeyError:
        raise ConfigError(f"unknown colormap {cmap!r}; use a matplotlib name such as 'jet' or 'inferno'") from None
    return cm(np.linspace(0.0, 1.0, 256))[:, :3].astype(np.float32)


def _thumbnail(image: ImageLike, max_side: int = PANEL_PX) -> Image.Image:
    img = load_image(image) if isinstance(image, (str, os.PathLike)) else image.convert("RGB")
    scale = max_side / max(img.size)
    if scale < 1.0:
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.LANCZOS)
    return img


def _check_location(location: Any, grid_shape: tuple[int, int], word: str) -> tuple[int, int]:
    try:
        row, col = (int(v) for v in location)
    except (TypeError, ValueError):
        raise ConfigError(f"location for word {word!r}: expected [row, col], got {location!r}") from None
    gh, gw = grid_shape
    if not (0 <= row < gh and 0 <= col < gw):
        raise ConfigError(f"location for word {word!r}: ({row}, {col}) lies outside the {gh}×{gw} attention grid")
    return row, col


def overlay(image: Image.Image, alpha: np.ndarray, location: tuple[int, int] | None = None, *,
            cmap: str = "jet", opacity: float = 0.7, lut: np.ndarray | None = None,
            vmax: float | None = None) -> Image.Image:
    """Blend one attention map over ``image`` (same size out); outline the hard-attention cell if given.

    The colour's opacity grows with the attention (from 20% to 100% of ``opacity``), so the focus
    stands out while the photo stays readable where the model did not look. Pass the caption's
    ``vmax`` (:func:`attention_scale`) so all panels share one scale; ``None`` stretches this map alone.
    """
    grid = _as_grid(alpha)
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    heat = upsample_attention(grid, rgb.shape[:2], vmax=vmax)
    colours = (lut if lut is not None else _colour_lut(cmap))[np.round(heat * 255).astype(np.uint8)]
    weight = (opacity * (0.2 + 0.8 * heat))[..., None]
    mixed = (1.0 - weight) * rgb + weight * colours
    out = Image.fromarray(np.round(mixed * 255).clip(0, 255).astype(np.uint8), mode="RGB")
    if location is not None:
        row, col = _check_location(location, grid.shape, "?")
        gh, gw = grid.shape
        x0, x1 = col * out.width / gw, (col + 1) * out.width / gw
        y0, y1 = row * out.height / gh, (row + 1) * out.height / gh
        draw = ImageDraw.Draw(out)
        line = max(2, round(min(out.size) / 120))
        # White line inside a black one: visible on any colour. Cells under ~3 px are too small to mark.
        if x1 - x0 >= 3 and y1 - y0 >= 3:
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(0, 0, 0), width=line + 2)
            draw.rectangle([x0 + 1, y0 + 1, x1 - 2, y1 - 2], outline=(255, 255, 255), width=line)
    return out


def _prepare(words: Sequence[str], alphas: Alphas,
             locations: Sequence[Any] | None) -> tuple[list[np.ndarray], list[tuple[int, int] | None]]:
    """Validate that there is exactly one map (and location, if any) per word."""
    if isinstance(alphas, np.ndarray) and alphas.ndim == 0:
        raise ConfigError("attention maps must be a T×gh×gw array or a list of gh×gw maps, got a scalar")
    maps = list(alphas)
    if len(maps) != len(words):
        raise ConfigError(
            f"got {len(maps)} attention maps for {len(words)} words; pass exactly one gh×gw map per word"
        )
    grids = [_as_grid(a, f"attention map for word {i + 1} ({w!r})") for i, (w, a) in enumerate(zip(words, maps))]
    if locations is None:
        return grids, [None] * len(words)
    if len(locations) != len(words):
        raise ConfigError(f"got {len(locations)} hard-attention locations for {len(words)} words; pass one per word")
    locs: list[tuple[int, int] | None] = [
        None if loc is None else _check_location(loc, g.shape, w) for w, g, loc in zip(words, grids, locations)
    ]
    return grids, locs


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

    grids, locs = _prepare(words, alphas, locations)
    sc = attention_scale(grids, scale)
    rows, cols = layout(1 + len(words), cols)
    thumb = _thumbnail(image)
    lut = _colour_lut(cmap)
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
    grids, locs = _prepare(words, alphas, locations)
    sc = attention_scale(grids, scale)
    thumb = _thumbnail(image)
    lut = _colour_lut(cmap)
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


# ------------------------------------------------------------------------------------------- HTML


def _data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
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
        thumb = _thumbnail(image_root / entry["image"] if image_root else entry["image"])
        grids, locs = _prepare(words, [w.get("attention") for w in words_in],
                               [w.get("location") for w in words_in])
        sc = attention_scale(grids, scale)
        legend = f"<small>{html.escape(sc.legend())}</small>" if words else ""
        figures = [f'<figure><img src="{_data_uri(thumb)}" alt="input"><figcaption>input{legend}</figcaption>'
                   "</figure>"]
        for i, (word, grid, loc) in enumerate(zip(words, grids, locs)):
            uri = _data_uri(overlay(thumb, grid, loc, opacity=opacity, lut=lut, vmax=sc.top))
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
    _check_scale(scale)  # a bad option is the caller's error, not one failed section per entry
    lut = _colour_lut(cmap)
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
