"""captioner: Show, Attend and Tell image captioning with soft, hard and local attention.

    >>> import captioner
    >>> model = captioner.load_model("default")
    >>> result = model.caption("photo.jpg", beam=3)
    >>> result.caption, result.score, result.alphas.shape   # per-word attention over the grid
"""

from __future__ import annotations

from .model.results import CaptionResult
from .model.search import DecodeOptions
from .errors import CaptionerError
from .model.registry import available_models

__version__ = "0.1.0"


def load_model(name_or_path: str = "default", device: str = "cpu"):
    """Load a shipped model by name (see :func:`available_models`) or a checkpoint path."""
    from .model.caption_model import load_model as _load

    return _load(name_or_path, device)


__all__ = ["load_model", "available_models", "CaptionResult", "DecodeOptions", "CaptionerError", "__version__"]
