"""Open any image file safely and turn it into an RGB picture the encoder can use.

Every path that reads a user's image goes through :func:`load_image`, so EXIF orientation, odd PIL
modes, decompression bombs and broken files are handled once, the same way everywhere.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError

#: Largest image accepted, in pixels (about 10,000 x 10,000); bigger files are refused as possible bombs.
MAX_PIXELS = 100_000_000
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def is_image_name(path: str | os.PathLike) -> bool:
    """True when the file name has an image extension (used when scanning folders)."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, LA, P, RGBA, CMYK, I;16, F, ...) to 8-bit RGB.

    Transparent pixels are composited on white, as viewers show them; 16-bit and float images are
    rescaled to their own range rather than clipped, so they do not come out black or white.
    """
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(scaled.astype(np.uint8), mode="L").convert("RGB")
    return img.convert("RGB")


def load_image(path: str | os.PathLike, max_pixels: int | None = None) -> Image.Image:
    """Open ``path`` as an upright RGB image, or raise :class:`ImageError` saying why not.

    ``max_pixels`` defaults to :data:`MAX_PIXELS` read at call time, so a program can lower the limit.
    Our limit, not PIL's lower warning threshold, decides; PIL's hard limit (2x its threshold) still
    stops absurd headers before any pixel memory is allocated.
    """
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    p = Path(path)
    if not p.exists():
        raise ImageError(f"{p}: no such file; check the path")
    if p.is_dir():
        raise ImageError(f"{p}: is a directory, not an image")
    if p.stat().st_size == 0:
        raise ImageError(f"{p}: empty file (0 bytes); re-download or remove it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below, against our limit
            with Image.open(p) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageError(
                        f"{p}: image is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}; "
                        "resize it first"
                    )
                img.load()
                img = ImageOps.exif_transpose(img)
                return to_rgb(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{p}: refused as a possible decompression bomb ({exc}); resize it first") from None
    except UnidentifiedImageError:
        raise ImageError(f"{p}: not an image file (format not recognised); check the file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{p}: cannot decode image, the file is truncated or corrupt ({exc})") from None


def find_images(paths: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files and folders into image paths.

    Returns ``(images, problems)`` where problems are ``(path, message)`` pairs for inputs that give no
    image (missing path, empty folder) so a batch can report them at the end instead of stopping.
    """
    images: list[Path] = []
    problems: list[tuple[str, str]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and is_image_name(q))
            if not found:
                problems.append((raw, f"{raw}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})"))
            images.extend(found)
        elif p.exists():
            images.append(p)
        else:
            problems.append((raw, f"{raw}: no such file or folder; check the path"))
    return images, problems
