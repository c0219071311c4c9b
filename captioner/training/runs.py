"""Run folders: a ``captioner train --out DIR`` folder belongs to one run and one writer at a time.

It holds the run's checkpoints, its training state, ``metrics.jsonl`` and ``curves.png``.
Rerunning into a folder that holds a finished run must never silently replace its checkpoints: it is
an error that says what the folder holds and the two ways on (``--resume``, ``--overwrite``), and
``--overwrite`` moves the old run aside rather than deleting it. A lock file in the folder stops two
trainings from writing it at once; one left by a killed process is taken over (see :mod:`captioner.locks`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator

from ..atomic import atomic_path, disk_full, remove_stale_temps, write_text
from ..errors import ConfigError, DiskFullError, RunFolderError
from ..locks import FileLock

LOCK_FILE = "train.lock"
STATE_FILE = "last.state.pt"
METRICS_FILE = "metrics.jsonl"


def run_files(out: Path) -> list[Path]:
    """The files that make ``out`` a run: its log, its training state and its checkpoints."""
    if not out.is_dir():
        return []
    found = [out / METRICS_FILE, out / STATE_FILE, *sorted(out.glob("*.safetensors"))]
    return [p for p in found if p.is_file()]


def describe_run(out: Path) -> str:
    """``"2 epochs, best val BLEU-4 12.30, last written 2025-01-02 10:11"`` from what the folder holds."""
    rows = []
    with contextlib.suppress(OSError, UnicodeDecodeError):
        for line in (out / METRICS_FILE).read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                rows.append(json.loads(line))
    rows = [r for r in rows if isinstance(r, dict)]
    epochs = max((r["epoch"] for r in rows if isinstance(r.get("epoch"), int)), default=None)
    bleu = [r["BLEU-4"] for r in rows if isinstance(r.get("BLEU-4"), (int, float))]
    parts = [f"{epochs} epoch{'' if epochs == 1 else 's'}" if epochs is not None else "no epoch logged"]
    if bleu:
        parts.append(f"best val BLEU-4 {max(bleu):.2f}")
    files = run_files(out)
    if files:
        when = max(p.stat().st_mtime for p in files)
        parts.append(f"last written {time.strftime('%Y-%m-%d %H:%M', time.localtime(when))}")
    return ", ".join(parts)


def move_aside(out: Path, keep: tuple[str, ...] = (LOCK_FILE,)) -> Path:
    """Move everything in ``out`` except ``keep`` into a new sibling ``OUT.old-<timestamp>``; returns it.

    Entry by entry rather than renaming ``out`` itself, so the lock in it is held throughout.
    """
    base = out if out.name not in ("", ".", "..") else out.resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    old, n = base.parent / f"{base.name}.old-{stamp}", 2
    while True:
        try:
            old.mkdir()
            break
        except FileExistsError:
            old, n = base.parent / f"{base.name}.old-{stamp}-{n}", n + 1
    for entry in sorted(out.iterdir()):
        if entry.name not in keep:
            os.rename(entry, old / entry.name)
    return old


@contextlib.contextmanager
def claim_run(out: str | os.PathLike, *, resume: bool = False, overwrite: bool = False) -> Iterator[Path]:
    """Hold ``out`` for one training for the ``with`` block; yields the folder.

    Refuses a folder another live process is training into, and one that already holds a run unless
    ``resume`` (continue it) or ``overwrite`` (move it aside, start again). Temporary files of writers
    that died are removed. A folder made here and left empty (the run failed before writing) is removed.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder; choose a folder for the run")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the run folder {out} ({exc.strerror}); choose another --out") from None
    lock = FileLock(out / LOCK_FILE, "run folder")
    try:
        lock.acquire()
        try:
            remove_stale_temps(out)
            if run_files(out) and not resume:
                if not overwrite:
                    raise RunFolderError(f"{out} already holds a run ({describe_run(out)}); continue it with "
                                         f"--resume, or start again with --overwrite (which moves the old run "
                                         f"to {out}.old-<time>), or choose another --out")
                print(f"moved the run that was in {out} to {move_aside(out)}", flush=True)
            yield out
        finally:
            lock.release()
    finally:
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only succeeds when empty


@contextlib.contextmanager
def resume_advice(out: Path) -> Iterator[None]:
    """A disk that fills mid-run: the error says how to go on from what was saved (nothing is half-written)."""
    try:
        yield
    except DiskFullError as exc:
        then = ("continue with --resume (what was saved before is intact)" if (out / STATE_FILE).is_file()
                else "start again with --overwrite")
        raise disk_full(Path(exc.path or out), then) from None


def write_log(out: Path, history: list[dict[str, Any]]) -> None:
    """``metrics.jsonl`` (one JSON row per epoch, rewritten whole: never a half-written last line) and ``curves.png``."""
    write_text(out / METRICS_FILE, "".join(json.dumps(row) + "\n" for row in history))
    if history:
        plot_curves(history, out / "curves.png")


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Training loss (or self-critical reward) and validation BLEU-4 per epoch."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5))
    ax1, ax2 = fig.subplots(1, 2)
    ep = [h["epoch"] for h in history]
    if "reward" in history[-1]:  # self-critical: the reward is what training raises
        ax1.plot(ep, [h.get("reward", math.nan) for h in history], marker="o")
        ax1.set(title="training reward (mean over samples)", xlabel="epoch")
    else:
        ax1.plot(ep, [h.get("ce", math.nan) for h in history], marker="o")
        ax1.set(title="training cross-entropy", xlabel="epoch")
    ax2.plot(ep, [h.get("BLEU-4", math.nan) for h in history], marker="o", color="tab:green")
    ax2.set(title="validation BLEU-4 (beam decoding)", xlabel="epoch")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
