"""One exception type for every user-facing failure.

The CLI catches :class:`CaptionerError` and prints its message as a single line, so each message
must say what went wrong, which file, and what to do about it.
"""

from __future__ import annotations

from pathlib import Path


class CaptionerError(Exception):
    """A failure caused by the user's input, reported as one line without a traceback."""


class ImageError(CaptionerError):
    """An image file that cannot be opened, decoded or accepted."""


class DataError(CaptionerError):
    """A dataset, caption or vocabulary file that is missing, malformed or of the wrong shape."""


class CheckpointError(CaptionerError):
    """A model checkpoint that is missing, corrupt, unsafe or of the wrong shape."""


class ConfigError(CaptionerError):
    """An unknown option, name or value in a configuration."""


class RunFolderError(CaptionerError):
    """A training ``--out`` folder that already holds another run (rerunning must never clobber it)."""


class LockError(CaptionerError):
    """A run folder or cache entry that another live process is writing right now."""


class DiskFullError(CaptionerError):
    """A write that failed because the disk (or the user's quota) is full; the old file is left as it was."""

    path: Path | None = None  # the file that could not be written
