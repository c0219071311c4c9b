"""Atomic file writes: output is either complete or absent, never half-written.

A write goes to a temporary file beside the target, named ``.NAME.tmp-<pid>-<host>-<random>``, and is
renamed over the target only once complete. A process killed mid-write (``kill -9``) leaves its temporary
file behind; the name says whose it was, so :func:`remove_stale_temps` can delete it once that writer is
gone while never touching a live writer's. A full disk is a :class:`DiskFullError` naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import DiskFullError
from .locks import HOST_TAG, process_alive

_FULL = (errno.ENOSPC, errno.EDQUOT)
_TEMP = re.compile(r"^\..+\.tmp-(\d+)-([0-9a-f]{8})-[^/]+$")


def disk_full(target: Path, then: str = "try again") -> DiskFullError:
    """The one-line error for a write of ``target`` that found the disk full; ``then`` is what to do after."""
    try:
        free = f"{shutil.disk_usage(target.parent).free / 1e6:.0f} MB free"
    except OSError:
        free = "free space unknown"
    err = DiskFullError(f"{target}: the disk is full (no space left on the device while writing it, {free} in "
                        f"{target.parent}); nothing was replaced: free some space, then {then}")
    err.path = target
    return err


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-{os.getpid()}-{HOST_TAG}-", dir=target.parent)
    except OSError as exc:
        raise (disk_full(target) if exc.errno in _FULL else exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:  # on disk before it replaces the old file, so a crash keeps one of them
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions of a new file
        os.replace(tmp_path, target)
    except OSError as exc:
        if exc.errno in _FULL:
            raise disk_full(target) from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files in ``folder`` whose writer, a process on this host, is no longer running.

    Returns what was removed. Temporary files of live processes, of other hosts (a shared disk) and
    names that are not ours are kept.
    """
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in Path(folder).iterdir():
            m = _TEMP.match(entry.name)
            if m and m.group(2) == HOST_TAG and not process_alive(int(m.group(1))) and entry.is_file():
                entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


def reserve_space(path: str | os.PathLike) -> None:
    """Allocate every block of ``path`` now, so writing it through a memory map cannot hit a full disk.

    A memory-mapped write to a full disk kills the process (SIGBUS); this turns it into an ENOSPC
    error up front. Filesystems without ``fallocate`` are left as they are.
    """
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` atomically (checkpoints: serialised in memory first, so a full disk is an OSError)."""
    with atomic_path(path) as tmp:
        _write_file(tmp, data)


def _write_file(tmp: Path, data: bytes) -> None:
    with open(tmp, "wb") as fh:
        fh.write(data)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    """Write ``obj`` as JSON atomically."""
    write_text(path, json.dumps(obj, indent=indent))


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` atomically."""
    write_bytes(path, text.encode("utf-8"))
