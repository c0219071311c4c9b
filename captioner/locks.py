"""Lock files: one writer at a time for a run folder or a feature-cache entry, and no hang after a crash.

A lock is a small JSON file ``{pid, host, started}`` created with ``O_CREAT | O_EXCL``, so exactly one
process can make it. The holder deletes it when done; one killed with ``kill -9`` cannot, so a lock
whose pid no longer runs on this host is stale and is taken over with a warning. A lock made on
another host (a shared disk) cannot be checked from here and is never taken over automatically.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DiskFullError, LockError

HOST = socket.gethostname()
#: a short, file-name-safe tag of this host, for temporary file names (see io_utils.atomic_path)
HOST_TAG = hashlib.sha1(HOST.encode()).hexdigest()[:8]
_pause = time.sleep  # tests replace it to act while a waiter waits, without timing anything
_UNREADABLE_TRIES = 20  # a lock read before its creator wrote it is empty; retry this often, then call it stale


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) from /proc, or None where there is no /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name, in parentheses, may hold spaces
    return fields[0], int(fields[19])


def process_start(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot): with the pid it names a process even after pid reuse."""
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def process_alive(pid: int, start: int | None = None) -> bool:
    """Whether ``pid`` is a running process on this host (and, given ``start``, still the same one)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, began = stat
    return state not in ("Z", "X") and (start is None or began == start)  # a zombie has already died


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as written in its file."""

    pid: int
    host: str
    started: str
    pid_start: int | None = None

    @classmethod
    def parse(cls, raw: bytes) -> Holder | None:
        try:
            data = json.loads(raw)
            return cls(int(data["pid"]), str(data["host"]), str(data["started"]), data.get("pid_start"))
        except (ValueError, KeyError, TypeError):
            return None

    def alive(self) -> bool | None:
        """True or False on this host; None when it is another host's process, which cannot be checked."""
        return process_alive(self.pid, self.pid_start) if self.host == HOST else None

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host} (since {self.started})"


class FileLock:
    """An exclusive lock file at ``path``; ``what`` names the thing it guards in messages.

    ``wait=False`` (a run folder): a live holder is an error at once. ``wait=True`` (a cache entry): wait
    for it, since it is writing exactly what the waiter needs. A stale lock is taken over either way.
    """

    def __init__(self, path: str | os.PathLike, what: str, *, wait: bool = False, poll: float = 0.5) -> None:
        self.path, self.what, self.wait, self.poll = Path(path), what, wait, poll
        self._raw: bytes | None = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, taking over a dead holder's; raise :class:`LockError` for a live one (unless waiting)."""
        announced, unreadable = False, 0
        while not self._try_create():
            raw = _read(self.path)
            if raw is None:
                continue  # released between our attempt and the read: try again
            holder = Holder.parse(raw)
            if holder is None:  # created but not yet written, or garbage that no process will ever fix
                unreadable += 1
                if unreadable < _UNREADABLE_TRIES:
                    _pause(0.05)
                    continue
                warnings.warn(f"{self.path}: unreadable lock file ({raw[:40]!r}); taking it over", stacklevel=3)
                self._take_over(raw)
                continue
            alive = holder.alive()
            if alive is False:
                warnings.warn(f"{self.path} was left by {holder.describe()}, which is no longer running "
                              f"(killed?); taking over the {self.what}", stacklevel=3)
                self._take_over(raw)
                continue
            gone = f" (if that process is gone, delete {self.path})" if alive is None else ""
            if not self.wait:
                raise LockError(f"{self.what} {self.path.parent} is in use: {holder.describe()} holds "
                                f"{self.path}; wait for it to finish or stop it{gone}")
            if not announced:
                warnings.warn(f"waiting for {holder.describe()}, which is writing the {self.what} "
                              f"{self.path.parent}{gone}", stacklevel=3)
                announced = True
            _pause(self.poll)

    def release(self) -> None:
        """Delete the lock file, but only while it is still ours (never another process's takeover)."""
        if self._raw is not None and _read(self.path) == self._raw:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self._raw = None

    def _try_create(self) -> bool:
        pid = os.getpid()
        raw = json.dumps({"pid": pid, "host": HOST, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                          "pid_start": process_start(pid), "token": secrets.token_hex(8)}).encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise _lock_error(self.path, exc) from None
        try:
            os.write(fd, raw)  # a few hundred bytes: one write
        except OSError as exc:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            raise _lock_error(self.path, exc) from None
        os.close(fd)
        self._raw = raw
        return True

    def _take_over(self, stale: bytes) -> None:
        """Remove the stale lock ``stale``, atomically, so that of two processes taking over only one wins.

        Renaming it away first means a lock another process made in the meantime is never deleted:
        if what was renamed is not the stale file, it is linked back (link never replaces a file).
        """
        aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # someone else took it over first
        try:
            if _read(aside) != stale:
                with contextlib.suppress(FileExistsError):
                    os.link(aside, self.path)
        finally:
            aside.unlink(missing_ok=True)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _lock_error(path: Path, exc: OSError) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"{path}: the disk is full, cannot create the lock file; free some space and try again")
    return LockError(f"cannot create the lock file {path} ({exc.strerror}); check that the folder is writable")
