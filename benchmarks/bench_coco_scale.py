"""Training and evaluation at COCO's size (113k images, 566k captions) on synthetic COCO-format data.

Runs the real commands as subprocesses, one after the other, and measures each from outside:

1. ``captioner synth --out WORK/data --images N`` (COCO captions_*.json and instances_*.json);
2. ``captioner train --format coco --data WORK/data/captions_train.json --val-data WORK/data/captions_val.json
   --epochs 1 --threads T --precision bf16`` with the feature cache in ``WORK/cache``: feature caching
   images/s, training captions/s (the run's own figure from metrics.jsonl), validation seconds;
3. ``captioner evaluate`` of the trained model on the val split (beam 3, pointing game with the
   instances file): images/s.

Memory: every 0.2 s the benchmark reads ``/proc/PID/status`` of the command: ``VmHWM`` (peak resident
set, everything), and the peaks of ``RssAnon`` (the process's own memory: Python, torch, the dataset) and
``RssFile`` (file pages mapped in, mostly the memory-mapped feature cache, which the kernel can drop
at any time). The resident figure that has to stay small is RssAnon; RssFile grows with the cache.
``ru_maxrss`` of the finished child is printed as well (it equals VmHWM).

The data (about 11 KB of JPEG and 169 KB of fp16 features per image at the default fused 14x14 grid:
20 GB of cache at 120k images) goes to ``--work`` (default: a new folder in the system temp folder),
never into the repository; it is deleted at the end unless ``--keep``.

    python benchmarks/bench_coco_scale.py                      # 120,000 images (hours on 2 cores)
    python benchmarks/bench_coco_scale.py --images 5000 --work /tmp/coco5k
    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/bench_coco_scale.py --images 30000 --work DIR --json out.json

``--flickr8k DIR`` runs steps 2 and 3 on a Flickr8k folder instead (train split; dev for validation
and evaluation), so the figures to compare come from the same commands and probes. Flags after ``--``
go to ``captioner train``: ``-- --limit-batches 1000`` bounds an epoch that would take hours.

``--reuse`` skips what a previous run left in ``--work`` (the dataset, the feature cache: a second
run then measures training without the caching). One JSON object with every figure is printed last
(and written to ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_FIELDS = ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem")


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """The memory fields of ``/proc/PID/status`` in kB (VmHWM, RssAnon, ...); empty off Linux or once it ended."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in _FIELDS:
                    out[key] = int(value.split()[0])
    except (OSError, ValueError):
        pass
    return out


class Watch:
    """Run a command, poll its /proc status and a cache folder until it ends; the peaks and event times."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: Path, cache: Path | None = None,
                 interval: float = 0.2) -> None:
        self.cmd, self.env, self.log, self.cache, self.interval = cmd, env, log, cache, interval
        self.peak: dict[str, int] = {}  # kB
        self.peak_anon_after_cache = 0  # kB: RssAnon peak once the feature cache is complete (training + validation)
        self.cache_started: float | None = None  # first sight of the cache's temporary .npy
        self.cache_done: float | None = None  # first sight of the finished .npy

    def _cache_state(self, now: float) -> None:
        if self.cache is None or self.cache_done is not None or not self.cache.is_dir():
            return
        names = [p.name for p in self.cache.rglob("*.npy*")]
        if self.cache_started is None and names:
            self.cache_started = now
        if any(n.endswith(".npy") and not n.startswith(".") for n in names):
            self.cache_done = now

    def run(self) -> tuple[int, float]:
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        start = time.perf_counter()
        with open(self.log, "w") as fh:
            proc = subprocess.Popen(self.cmd, stdout=fh, stderr=subprocess.STDOUT, env=self.env)
            while proc.poll() is None:
                now = time.perf_counter()
                self._cache_state(now)
                st = proc_status(proc.pid)
                for k, v in st.items():
                    self.peak[k] = max(self.peak.get(k, 0), v)
                if self.cache_done is not None and "RssAnon" in st:
                    self.peak_anon_after_cache = max(self.peak_anon_after_cache, st["RssAnon"])
                time.sleep(self.interval)
        elapsed = time.perf_counter() - start
        self._cache_state(time.perf_counter())
        self.maxrss_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kB; max over all children
        self.maxrss_grew = self.maxrss_children > before
        self.start = start
        return proc.returncode, elapsed


def _mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


def _captioner() -> list[str]:
    return [sys.executable, "-m", "captioner"]


def _check(rc: int, what: str, log: Path) -> None:
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise SystemExit(f"{what} failed (exit {rc}); last lines of {log}:\n" + "\n".join(tail))


def _synth(args: argparse.Namespace, data: Path, env: dict[str, str], work: Path,
           fig: dict[str, object]) -> tuple[dict[str, int], int]:
    """``captioner synth`` into ``data`` (unless --reuse finds it there), timed; image counts and captions."""
    if not (args.reuse and (data / "captions_train.json").is_file()):
        if data.exists():
            shutil.rmtree(data)
        cmd = _captioner() + ["synth", "--out", str(data), "--images", str(args.images)]
        if args.synth_workers:
            cmd += ["--workers", str(args.synth_workers)]
        w = Watch(cmd, env, work / "synth.log")
        rc, sec = w.run()
        _check(rc, "synth", work / "synth.log")
        fig["synth"] = {"seconds": round(sec, 1), "images_per_s": round(args.images / sec, 1),
                        "peak_rss_mb": _mb(w.peak.get("VmHWM")),
                        "jpeg_mb": round(sum(f.stat().st_size for f in (data / "images").rglob("*.jpg")) / 2**20, 1)}
        print(f"synth: {args.images} images in {sec:.1f} s = {args.images / sec:.0f} images/s", flush=True)
    counts = {s: len(json.loads((data / f"captions_{s}.json").read_text())["images"]) for s in ("train", "val")}
    n_caps = len(json.loads((data / "captions_train.json").read_text())["annotations"])
    return counts, n_caps


def _flickr8k_counts(folder: Path) -> tuple[dict[str, int], int]:
    """Train / dev images and training captions of a Flickr8k folder, as `captioner train` reads them."""
    from captioner.data.flickr8k import load_flickr8k

    train, val = load_flickr8k(folder, splits="train"), load_flickr8k(folder, splits="val")
    return {"train": len(train), "val": len(val)}, sum(len(r.captions) for r in train)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=120_000, help="synthetic images (default 120000, COCO's size)")
    p.add_argument("--work", help="folder for the dataset, cache, run and logs (default: a new temp folder)")
    p.add_argument("--keep", action="store_true", help="keep --work at the end (default: delete it)")
    p.add_argument("--reuse", action="store_true", help="reuse the dataset / feature cache already in --work")
    p.add_argument("--threads", type=int, default=1, help="torch threads of train and evaluate (default 1)")
    p.add_argument("--precision", default="bf16", help="train --precision (default bf16)")
    p.add_argument("--synth-workers", type=int, help="captioner synth --workers (default: its own choice)")
    p.add_argument("--eval-limit", type=int, help="evaluate only the first N val images (default: all)")
    p.add_argument("--skip-eval", action="store_true", help="time synth and train only")
    p.add_argument("--flickr8k", metavar="DIR", help="measure the same on a Flickr8k folder instead of synthetic "
                   "data (train on its train split, validate and evaluate on dev): the figures to compare with")
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="after --: extra flags for captioner train")
    args = p.parse_args(argv)
    extra = [a for a in args.train_args if a != "--"]

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="captioner-coco-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    data, cache, run, ev_out = work / "data", work / "cache", work / "run", work / "eval"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONUNBUFFERED": "1"}
    fig: dict[str, object] = {"images": args.images, "threads": args.threads, "precision": args.precision,
                              "date": time.strftime("%Y-%m-%d"), "nice": os.nice(0), "work": str(work)}
    try:
        # ------------------------------------------------------------------ 1. the data
        if args.flickr8k:
            train_data = ["--format", "flickr8k", "--data", args.flickr8k]
            eval_data = ["--format", "flickr8k", "--data", args.flickr8k, "--split", "val"]
            counts, n_caps = _flickr8k_counts(Path(args.flickr8k))
            fig["dataset"], fig["images"] = "flickr8k", counts["train"] + counts["val"]
        else:
            train_data = ["--format", "coco", "--data", str(data / "captions_train.json"),
                          "--val-data", str(data / "captions_val.json")]
            eval_data = ["--format", "coco", "--data", str(data / "captions_val.json"),
                         "--instances", str(data / "instances_val.json")]
            counts, n_caps = _synth(args, data, env, work, fig)
        fig["train_images"], fig["val_images"], fig["train_captions"] = counts["train"], counts["val"], n_caps

        # ------------------------------------------------------------------ 2. train one epoch
        cached_before = cache.is_dir() and any(cache.rglob("*.npy"))
        if run.exists():
            shutil.rmtree(run)
        cmd = _captioner() + ["train", *train_data, "--epochs", "1",
                              "--threads", str(args.threads), "--precision", args.precision,
                              "--out", str(run), "--cache-dir", str(cache), "--no-progress", *extra]
        w = Watch(cmd, env, work / "train.log", cache=cache)
        rc, sec = w.run()
        _check(rc, "train", work / "train.log")
        row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
        cache_bytes = sum(f.stat().st_size for f in cache.rglob("*.npy"))
        train_fig: dict[str, object] = {
            "seconds": round(sec, 1), "captions_per_s": round(row["captions_per_s"], 1),
            "epoch_seconds": round(row["epoch_seconds"], 1), "val_seconds": round(row.get("val_seconds", float("nan")), 1),
            "val_bleu4": round(row.get("BLEU-4", float("nan")), 2),
            "peak_rss_mb": _mb(w.peak.get("VmHWM")), "peak_anon_mb": _mb(w.peak.get("RssAnon")),
            "peak_file_mb": _mb(w.peak.get("RssFile")), "peak_anon_after_cache_mb": _mb(w.peak_anon_after_cache),
            "ru_maxrss_mb": _mb(w.maxrss_children) if w.maxrss_grew else None,
            "cache_gb": round(cache_bytes / 1e9, 2), "cache_reused": cached_before,
        }
        cache_sec = (w.cache_done - w.cache_started) if w.cache_started is not None and w.cache_done is not None else 0
        if not cached_before and cache_sec > 0:  # a tiny cache can be written between two polls: no figure
            n_img = counts["train"] + counts["val"]
            train_fig.update(cache_seconds=round(cache_sec, 1), cache_images_per_s=round(n_img / cache_sec, 1),
                             startup_seconds=round(w.cache_started - w.start, 1))
        fig["train"] = train_fig
        print(f"train: {sec:.1f} s in all; {train_fig.get('cache_images_per_s', '-')} images/s caching, "
              f"{train_fig['captions_per_s']} captions/s, validation {train_fig['val_seconds']} s; "
              f"peak RSS {train_fig['peak_rss_mb']} MB (anonymous {train_fig['peak_anon_mb']} MB, "
              f"file-backed {train_fig['peak_file_mb']} MB)", flush=True)

        # ------------------------------------------------------------------ 3. evaluate on val
        if not args.skip_eval:
            cmd = _captioner() + ["evaluate", "--model", str(run / "best.safetensors"), *eval_data, "--beam", "3",
                                  "--out", str(ev_out), "--no-progress"]
            if args.eval_limit:
                cmd += ["--limit", str(args.eval_limit)]
            w = Watch(cmd, env, work / "evaluate.log")
            rc, sec = w.run()
            _check(rc, "evaluate", work / "evaluate.log")
            res = json.loads(next(ev_out.glob("metrics_*.json")).read_text())
            n_eval = res["images"]
            fig["evaluate"] = {"images": n_eval, "seconds": round(sec, 1), "images_per_s": round(n_eval / sec, 2),
                               "BLEU-4": round(res["metrics"]["BLEU-4"], 2),
                               "pointing_hit_rate": res.get("pointing_game", {}).get("overall", {}).get("hit_rate"),
                               "peak_rss_mb": _mb(w.peak.get("VmHWM")), "peak_anon_mb": _mb(w.peak.get("RssAnon"))}
            print(f"evaluate: {n_eval} images in {sec:.1f} s = {n_eval / sec:.2f} images/s, "
                  f"peak RSS {fig['evaluate']['peak_rss_mb']} MB", flush=True)
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
        elif not args.keep:
            for sub in (data, cache, run, ev_out):
                shutil.rmtree(sub, ignore_errors=True)
    print(json.dumps(fig))
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
