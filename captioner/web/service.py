"""The blocking work behind `captioner serve`: open uploads, caption, draw the page's heatmaps.

Kept free of any web code, so it can be tested and reused without a server. Models are loaded once;
each sits behind its own lock (a PyTorch module is not safe to run from two threads at once, and one
request at a time per model keeps memory flat under load).
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from PIL import Image, UnidentifiedImageError

from ..data.images import MAX_PIXELS, is_image_name, load_image
from ..errors import ConfigError, ImageError
from ..data.erase import erase as erase_boxes
from ..model.results import caption_entry
from ..model.search import DecodeOptions
from .page import size_text

if TYPE_CHECKING:
    from ..model.caption_model import CaptionModel

log = logging.getLogger("captioner.web")
DEMO_DIR = Path(__file__).resolve().parents[2] / "demo"
DEFAULT_MAX_UPLOAD_MB = 10.0
OVERLAY_PX = 384  # longest side of the photo and heatmaps sent to the page
#: when serving one of these, its counterpart is loaded too (if installed) so the page can compare them
COUNTERPARTS = {"flickr8k-soft": "flickr8k-hard", "flickr8k-hard": "flickr8k-soft",
                "synth-soft": "synth-hard", "synth-hard": "synth-soft"}


class RequestError(Exception):
    """A request we refuse: the HTTP status and the one-line message the page shows."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Served:
    model: CaptionModel
    lock: threading.Lock = field(default_factory=threading.Lock)


class CaptionService:
    """The blocking part of the server (decode, caption, draw heatmaps), kept free of any web code.

    Each model has its own lock: PyTorch modules are not safe to run from two threads at once, and
    one request at a time per model also keeps memory flat under load. Image decoding and heatmap
    drawing happen outside the lock, so they overlap with another request's inference.
    """

    def __init__(self, models: Mapping[str, CaptionModel], demo_dir: str | os.PathLike | None = DEMO_DIR,
                 max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1024 * 1024),
                 max_pixels: int = MAX_PIXELS) -> None:
        if not models:
            raise ConfigError("no model to serve; pass --model NAME_OR_PATH")
        if max_upload_bytes < 1:
            raise ConfigError(f"upload limit must be positive, got {max_upload_bytes} bytes")
        self.served = {name: _Served(m) for name, m in models.items()}
        self.default = next(iter(self.served))
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        root = Path(demo_dir) if demo_dir else None
        # Listed once: a demo is fetched by its name in this table, never by a path from the request.
        self.demos: dict[str, Path] = {
            p.name: p for p in sorted(root.iterdir()) if p.is_file() and is_image_name(p)
        } if root and root.is_dir() else {}

    def model_info(self) -> list[dict[str, Any]]:
        return [{"name": n, "attention": s.model.cfg.attention, "grid": s.model.cfg.grid,
                 "encoder": s.model.cfg.encoder,
                 "familiarity_threshold": _threshold(s.model)} for n, s in self.served.items()]

    def pick(self, name: str | None) -> str:
        name = name or self.default
        if name not in self.served:
            raise RequestError(400, f"unknown model {name!r}; this server has: {', '.join(self.served)}")
        return name

    def open_upload(self, data: bytes, label: str) -> Image.Image:
        """Decode uploaded bytes with :func:`load_image`, refusing empty, non-image and huge files."""
        if not data:
            raise RequestError(400, f"{label}: empty upload (0 bytes); choose a photo file")
        if len(data) > self.max_upload_bytes:
            raise RequestError(413, too_big(label, len(data), self.max_upload_bytes))
        # A header-only look picks the status; load_image itself decodes and words the message.
        status = 400
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as probe:
                    w, h = probe.size
            if w * h > min(self.max_pixels, Image.MAX_IMAGE_PIXELS or self.max_pixels):
                status = 413
        except UnidentifiedImageError:
            status = 415
        except Image.DecompressionBombError:
            status = 413
        except Exception:  # noqa: BLE001  broken header: load_image below says what is wrong
            status = 400
        with tempfile.TemporaryDirectory(prefix="captioner-upload.") as tmp:
            path = Path(tmp) / "upload"
            path.write_bytes(data)
            try:
                return load_image(path, max_pixels=self.max_pixels)
            except ImageError as exc:
                raise RequestError(status, str(exc).replace(str(path), label)) from None

    def open_demo(self, name: str) -> Image.Image:
        if name not in self.demos:
            raise RequestError(404, f"no demo image {name!r}; choose one of: {', '.join(self.demos) or 'none'}")
        return load_image(self.demos[name])

    def caption(self, image: Image.Image, label: str, model: str, opts: DecodeOptions,
                overlays: bool = False, erase: list | None = None) -> dict[str, Any]:
        """The ``caption --json`` entry for one image; ``overlays`` adds the page's heatmaps and figures;
        ``erase``: boxes painted over first (the entry's ``erased`` lists those applied, clipped to the photo)."""
        served = self.served[model]
        applied = None
        if erase is not None:
            image, applied = erase_boxes(image, erase)
        with served.lock:
            result = served.model.caption_images([image], opts)[0]
        result.erased = applied
        entry = caption_entry(label, result, model, served.model.cfg.grid)
        if overlays:
            entry.update(render_overlays(image, entry))
        return entry


def render_overlays(image: Image.Image, entry: Mapping[str, Any], max_side: int = OVERLAY_PX) -> dict[str, Any]:
    """What the page adds to the entry: the photo and each word's heatmap as JPEG data URIs, and the figures.

    ``{"thumbnail", "overlays": [uri per word], "attention_max", "show_image_weight", "width", "height",
    "words"}``, where ``width`` x ``height`` is ``image``'s size (the upright photo's own pixels, the frame of
    erase boxes and of the attention grid) and ``words`` is the entry's list with each word's ``peak``
    (max α) and ``image_weight`` (Σ α) added.
    Drawn with :func:`captioner.visualize.overlay` on the caption-wide scale of
    :func:`captioner.visualize.attention_scale`, the code behind the CLI's PNG/GIF/HTML outputs, on the
    upright photo the model saw, so the page and the files always agree.
    """
    from ..heatmaps import attention_scale, data_uri, overlay

    thumb = image.copy()
    thumb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    sc = attention_scale([w["attention"] for w in entry["words"]])
    uris = [data_uri(overlay(thumb, w["attention"], w.get("location"), vmax=sc.top), 88) for w in entry["words"]]
    # min(1, ...): a row of 5-decimal weights can sum a hair over 1; the figure is a share of the attention.
    words = [{**w, "peak": round(peak, 5), "image_weight": round(min(1.0, weight), 5)}
             for w, peak, weight in zip(entry["words"], sc.peaks, sc.image_weights)]
    return {"thumbnail": data_uri(thumb, 88), "overlays": uris, "attention_max": round(sc.vmax, 5),
            "show_image_weight": sc.show_image_weight, "width": image.width, "height": image.height, "words": words}


def _threshold(model: Any) -> float | None:
    """The model's familiarity threshold, for the page's warning (None: no familiarity data)."""
    fam = getattr(model, "familiarity", None)
    return fam.threshold if fam is not None else None


def too_big(label: str, size: int, limit: int) -> str:
    return (f"{label}: upload is {size_text(size)}, over the limit of {size_text(limit)}; "
            "resize the photo (or restart with a bigger --max-upload-mb)")


def load_models(model: str, compare: str | None = "auto", device: str = "cpu") -> dict[str, CaptionModel]:
    """Load the served models once: ``model``, plus ``compare`` (``auto``: the soft/hard counterpart if installed)."""
    from ..model.caption_model import load_model
    from ..model.registry import ALIASES, available_models

    names = [model]
    if compare == "auto":
        other = COUNTERPARTS.get(ALIASES.get(model, model))
        if other and other in available_models():
            names.append(other)
    elif compare and compare != "none":
        names.append(compare)
    loaded: dict[str, CaptionModel] = {}
    for name in names:
        m = load_model(name, device=device)
        key, n = m.name, 2
        while key in loaded:  # two checkpoints with one name (e.g. two runs' best.safetensors)
            key, n = f"{m.name}#{n}", n + 1
        loaded[key] = m
    return loaded
