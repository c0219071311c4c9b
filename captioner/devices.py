"""Where a model runs: one ``--device`` flag and one resolution for caption, evaluate, serve and train.

``auto`` (the default) takes the GPU when torch sees one and the CPU otherwise, so the same command
line works on a laptop and on a GPU box; asking for ``cuda`` where there is none is a one-line error
rather than a CUDA traceback. torch is imported lazily: building the argument parser stays fast.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

DEFAULT_DEVICE = "auto"
DEVICE_HELP = "where the model runs: auto (CUDA when a GPU is available, else the CPU) | cpu | cuda | cuda:N"


def add_device_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The ``--device`` flag, spelled and explained the same way by every command."""
    parser.add_argument("--device", default=DEFAULT_DEVICE, help=f"{DEVICE_HELP} (default: {DEFAULT_DEVICE})")


def resolve_device(device: str | torch.device = DEFAULT_DEVICE) -> torch.device:
    """``auto``, ``cpu`` or ``cuda[:N]`` as a torch device; CUDA asked for on a machine without it is a clear error."""
    import torch

    if isinstance(device, str) and device.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but no CUDA GPU is available here; use --device cpu (or auto)")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {device!r}; use auto, cpu or cuda")
    return dev
