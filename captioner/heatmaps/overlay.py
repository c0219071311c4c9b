"""One attention map over one photo: upsampling, the shared colour scale, and the blended overlay.

The PNG figure, the GIF, the HTML report and the web page all draw their maps through :func:`overlay`,
so they always agree. All panels of one caption share one colour scale, 0 .. the caption's largest
attention weight (:func:`attention_scale`), so a flat map looks flat beside a peaked one; each word
is labelled with its peak weight and, when some word's map sums to less than 1 (a visual-sentinel
model), its image weight.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..data.images import load_image
from ..errors import ConfigError

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


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    return scale


def attention_scale(grids: Sequence[Any], scale: str = "caption") -> AttentionScale:
    """The caption-wide scale of validated maps: max α over all cells of all words, and per-word figures."""
    check_scale(scale)
    arrays = [np.asarray(g, dtype=np.float64) for g in grids]
    peaks = tuple(float(a.max()) for a in arrays)
    return AttentionScale(vmax=max(peaks, default=0.0), peaks=peaks,
                          image_weights=tuple(float(a.sum()) for a in arrays), scale=scale)


def colour_lut(cmap: str) -> np.ndarray:
    from matplotlib import colormaps  # lazy: keeps `import captioner.visualize` cheap

    try:
        cm = colormaps[cmap]
    except KeyError:
        raise ConfigError(f"unknown colormap {cmap!r}; use a matplotlib name such as 'jet' or 'inferno'") from None
    return cm(np.linspace(0.0, 1.0, 256))[:, :3].astype(np.float32)


def thumbnail(image: ImageLike, max_side: int = PANEL_PX) -> Image.Image:
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
    colours = (lut if lut is not None else colour_lut(cmap))[np.round(heat * 255).astype(np.uint8)]
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


def prepare_maps(words: Sequence[str], alphas: Alphas,
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
