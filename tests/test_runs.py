"""Never lose a trained model: a run folder holds one run, one writer at a time, and crashes leave nothing behind."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import captioner
from captioner import atomic as io_utils
from captioner import locks
from captioner.cli.main import main as cli_main
from captioner.config import to_dict
from captioner.errors import ConfigError, DiskFullError, LockError, RunFolderError
from captioner.data.feature_cache import cache_entry, cache_features
from captioner.training.runs import LOCK_FILE, claim_run
from captioner.training.state import load_state as _load_state
from captioner.training.loop import main as train_main
from conftest import random_pngs, train_config

ROOT = Path(__file__).resolve().parent.parent
HOLD_LOCK = """
import sys
from captioner.locks import FileLock
lock = FileLock(sys.argv[1], "test")
lock.acquire()
print("held", flush=True)
sys.stdin.read()
lock.release()
"""
HALF_WRITTEN = """
import sys
from captioner.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"half of it")
    print(tmp, flush=True)
    sys.stdin.read()
"""


def start(script: str, arg: Path) -> tuple[subprocess.Popen, str]:
    """Run ``script`` in another Python process until it prints its first line; returns it and that line."""
    proc = subprocess.Popen([sys.executable, "-c", script, str(arg)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    line = proc.stdout.readline().strip()
    assert line, "the helper process died"
    return proc, line


def kill_9(proc: subprocess.Popen) -> None:
    proc.kill()  # SIGKILL: no finally block, no cleanup
    proc.wait(30)


def finish(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    proc.wait(30)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def config_file(cfg, path: Path) -> Path:
    """The run as a `captioner train --config` file, so the CLI can be driven with the same settings."""
    path.write_text(json.dumps(to_dict(cfg)))
    return path


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("captioner: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


# ------------------------------------------------------------------------------- a run per folder


def test_training_again_into_a_finished_run_is_refused_and_changes_nothing(shapes, tmp_path, capsys):
    run = tmp_path / "run"
    cfg = train_config(shapes, run, epochs=1)
    train_main(cfg)
    before = snapshot(run)
    with pytest.raises(RunFolderError) as info:
        train_main(train_config(shapes, run, epochs=1, seed=4))
    msg = str(info.value)
    assert f"{run} already holds a run (1 epoch, best val BLEU-4 " in msg and "last written 20" in msg
    assert "--resume" in msg and "--overwrite" in msg and "\n" not in msg
    assert cli_main(["train", "--config", str(config_file(cfg, tmp_path / "cfg.json")), "--seed", "4"]) == 2
    assert "already holds a run" in one_error_line(capsys)
    assert snapshot(run) == before  # not one byte of the finished run changed
    assert not (run / LOCK_FILE).exists()


def test_overwrite_moves_the_old_run_aside_and_starts_again(shapes, tmp_path, capsys):
    run = tmp_path / "run"
    cfg = train_config(shapes, run, epochs=1)
    train_main(cfg)
    before = snapshot(run)
    assert cli_main(["train", "--config", str(config_file(cfg, tmp_path / "cfg.json")), "--seed", "4",
                     "--overwrite"]) == 0
    [old] = tmp_path.glob("run.old-*")
    assert f"moved the run that was in {run} to {old}" in capsys.readouterr().out
    assert snapshot(old) == before  # the old run, whole, beside the new one
    assert captioner.load_model(str(old / "best.safetensors")).vocab
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]  # a fresh log, not the old one's continued
    assert json.loads((run / "config.json").read_text())["seed"] == 4
    assert (run / "best.safetensors").read_bytes() != before["best.safetensors"]
    assert not (run / LOCK_FILE).exists() and not (old / LOCK_FILE).exists()


def test_resume_and_overwrite_together_is_a_config_error(shapes, tmp_path):
    with pytest.raises(ConfigError, match="only one"):
        train_main(train_config(shapes, tmp_path / "run"), resume=True, overwrite=True)


def test_a_failed_start_leaves_no_empty_run_folder_and_out_must_be_a_folder(shapes, tmp_path):
    with pytest.raises(ConfigError):
        train_main(train_config(shapes, tmp_path / "run", val_data=""))  # coco without validation data
    assert not (tmp_path / "run").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        train_main(train_config(shapes, tmp_path / "file"))


# ----------------------------------------------------------------------------- one writer at a time


def test_a_second_writer_is_refused_at_once_naming_the_holder(shapes, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    holder, _ = start(HOLD_LOCK, run / LOCK_FILE)
    try:
        cfg = train_config(shapes, run)
        with pytest.raises(LockError) as info:
            train_main(cfg)
        msg = str(info.value)
        assert f"pid {holder.pid} on host {locks.HOST} (since 20" in msg and str(run / LOCK_FILE) in msg
        assert cli_main(["train", "--config", str(config_file(cfg, tmp_path / "cfg.json"))]) == 2
        assert f"pid {holder.pid}" in one_error_line(capsys)
        assert not (tmp_path / "cache").exists()  # refused before any work: no image was encoded
        assert (run / LOCK_FILE).exists()  # and the holder's lock is left alone
    finally:
        finish(holder)
    assert not (run / LOCK_FILE).exists()  # released by its holder on exit


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_warning(shapes, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder, _ = start(HOLD_LOCK, run / LOCK_FILE)
    kill_9(holder)
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == holder.pid  # left behind
    with pytest.warns(UserWarning, match=f"pid {holder.pid} on host .* no longer running"):
        result = train_main(train_config(shapes, run, epochs=1))
    assert [r["epoch"] for r in result["history"]] == [1]
    assert not (run / LOCK_FILE).exists()


def test_an_unreadable_lock_is_taken_over_without_hanging(tmp_path, monkeypatch):
    lock = tmp_path / "x.lock"
    lock.write_bytes(b"")  # a creator killed between creating and writing it
    monkeypatch.setattr(locks, "_pause", lambda seconds: None)
    with pytest.warns(UserWarning, match="unreadable lock"):
        with locks.FileLock(lock, "test"):
            assert json.loads(lock.read_text())["pid"] > 0
    assert not lock.exists()


# ---------------------------------------------------------------- crashes leave nothing that matters


def test_temp_files_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    dead, dead_tmp = start(HALF_WRITTEN, run / "best.safetensors")
    live, live_tmp = start(HALF_WRITTEN, run / "last.safetensors")
    try:
        kill_9(dead)
        assert Path(dead_tmp).exists() and Path(live_tmp).exists()
        (run / ".notes.tmp").write_text("not ours")  # a name not made by atomic_path is never touched
        with claim_run(run):
            assert temps(run) == [Path(live_tmp).name]
        assert (run / ".notes.tmp").exists()
    finally:
        finish(live)
    assert temps(run) == [] and (run / "last.safetensors").read_bytes() == b"half of it"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    return random_pngs(tmp_path_factory.mktemp("imgs"))


@pytest.fixture(scope="module")
def encoder():
    from captioner.model.encoder import Encoder

    return Encoder("efficientnet-lite0", 2)


def test_a_killed_cache_writer_leaves_nothing_the_next_start_keeps(images, encoder, tmp_path):
    stem = cache_entry(encoder, images, tmp_path)
    stem.parent.mkdir(parents=True)
    dead, dead_tmp = start(HALF_WRITTEN, stem.with_suffix(".npy"))
    writer, _ = start(HOLD_LOCK, stem.with_suffix(".lock"))
    live, live_tmp = start(HALF_WRITTEN, stem.parent / "other.npy")  # another entry, still being written
    try:
        kill_9(dead)
        kill_9(writer)
        with pytest.warns(UserWarning, match="no longer running"):
            store = cache_features(encoder, images, tmp_path, progress=False)
        assert store.valid.all() and store.shape[0] == 3
        assert temps(stem.parent) == [Path(live_tmp).name]
        assert not stem.with_suffix(".lock").exists()
    finally:
        finish(live)


def test_a_cache_writer_waits_for_the_live_one_then_reads_its_entry(images, encoder, tmp_path, monkeypatch):
    first = cache_features(encoder, images, tmp_path, progress=False)
    stem = cache_entry(encoder, images, tmp_path)
    meta = stem.with_suffix(".json")
    saved = meta.read_bytes()
    meta.unlink()  # as if the entry were still being written
    holder, _ = start(HOLD_LOCK, stem.with_suffix(".lock"))
    waited = []

    def pause(seconds: float) -> None:  # while the waiter waits, the holder finishes its entry and exits
        waited.append(seconds)
        meta.write_bytes(saved)
        finish(holder)

    monkeypatch.setattr(locks, "_pause", pause)
    monkeypatch.setattr(encoder, "frozen_part", lambda *a: pytest.fail("encoded again instead of waiting"))
    with pytest.warns(UserWarning, match=f"waiting for pid {holder.pid}"):
        store = cache_features(encoder, images, tmp_path, progress=False)
    assert waited and np.array_equal(np.asarray(store.array), np.asarray(first.array))
    assert not stem.with_suffix(".lock").exists()


def test_a_full_disk_while_caching_is_one_clear_error_and_leaves_no_file(images, encoder, tmp_path, monkeypatch,
                                                                        capsys):
    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io_utils.os, "posix_fallocate", full, raising=False)
    stem = cache_entry(encoder, images, tmp_path)
    with pytest.raises(DiskFullError) as info:
        cache_features(encoder, images, tmp_path, progress=False)
    msg = str(info.value)
    assert msg.startswith(f"{stem.with_suffix('.npy')}: the disk is full") and "\n" not in msg
    assert list(stem.parent.iterdir()) == []  # no partial array, no index, no lock


def fail_checkpoint_writes(monkeypatch) -> list[str]:
    """Writes of checkpoints and training state get half-way, then find the disk full; returns their names."""
    real = io_utils._write_file
    failed = []

    def write(tmp: Path, data: bytes) -> None:
        if ".safetensors." in tmp.name or ".state.pt." in tmp.name:
            tmp.write_bytes(data[: len(data) // 2])
            failed.append(tmp.name)
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tmp, data)

    monkeypatch.setattr(io_utils, "_write_file", write)
    return failed


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint_loadable(shapes, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    train_main(train_config(shapes, run, epochs=1))
    saved = snapshot(run)
    with monkeypatch.context() as m:
        failed = fail_checkpoint_writes(m)
        with pytest.raises(DiskFullError) as info:
            train_main(train_config(shapes, run, epochs=2), resume=True)
        assert failed
        msg = str(info.value)
        assert " the disk is full " in msg and str(run) in msg and "continue with --resume" in msg
        cfg_file = config_file(train_config(shapes, run, epochs=2), tmp_path / "cfg.json")
        assert cli_main(["train", "--config", str(cfg_file), "--resume"]) == 2
        assert "the disk is full" in one_error_line(capsys)
    assert temps(run) == [] and not (run / LOCK_FILE).exists()
    for name in ("best.safetensors", "last.safetensors", "last.state.pt"):
        assert (run / name).read_bytes() == saved[name], name
    assert captioner.load_model(str(run / "best.safetensors")).vocab
    assert json.loads(_load_state(run / "last.state.pt")["state"])["epoch"] == 1
    # with space again, --resume goes on from the saved epoch; the log has each epoch once
    result = train_main(train_config(shapes, run, epochs=2), resume=True)
    assert [r["epoch"] for r in result["history"]] == [1, 2]
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
