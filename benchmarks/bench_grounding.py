"""The grounding matrix: train on each synthetic style, point on every style.

``python benchmarks/bench_grounding.py --work grounding/`` writes one dataset per style (``captioner
synth --style S``), trains soft and hard attention on each with ``captioner train``'s defaults (plus
``--train-args``), then scores every model on every style's test split with ``captioner evaluate
--instances``: the pointing game strict (the peak cell's centre inside a box of the named shape) and
tolerant (within 15 px of it), colour words strict, and test BLEU-4. A recipe chosen on one style is
honest only on the others, so the table marks the diagonal (trained and tested on the same style).

Everything runs as the commands a user would type, in subprocesses (``--jobs`` at a time, each with
``--threads`` torch threads); finished datasets, runs and evaluations are reused, so an interrupted
matrix continues where it stopped. Results: ``WORK/TAG.json`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SIZE_WORDS = {"small", "large"}  # synth instances carry the size as an attribute too; only colours are scored


def _captioner(*args: str) -> list[str]:
    return [sys.executable, "-m", "captioner", *args]


def _run(cmd: list[str], log: Path, threads: int = 1) -> None:
    """Run one command, its output in ``log``; a failure stops the matrix with the log's last lines."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": str(threads)}
    with open(log, "w") as out:
        code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if code != 0:
        tail = log.read_text().splitlines()[-5:]
        raise SystemExit(f"failed ({code}): {shlex.join(cmd)}\n" + "\n".join(tail))


def make_data(work: Path, style: str, images: int, seed: int) -> Path:
    """The style's dataset (written once)."""
    out = work / "data" / style
    if not (out / "captions_test.json").is_file():
        _run(_captioner("synth", "--out", str(out), "--images", str(images), "--seed", str(seed), "--style", style),
             work / "logs" / f"synth-{style}.log")
    return out


def train(work: Path, tag: str, attention: str, style: str, args: argparse.Namespace) -> Path:
    """A model trained with the defaults (plus ``--train-args``) on one style (reused when finished)."""
    data, run = work / "data" / style, work / "runs" / tag / f"{attention}-{style}"
    if not (run / "best.safetensors").is_file() or not (run / "metrics.jsonl").is_file() or \
            len((run / "metrics.jsonl").read_text().splitlines()) < args.epochs:
        cmd = _captioner("train", "--format", "coco", "--data", str(data / "captions_train.json"),
                         "--val-data", str(data / "captions_val.json"), "--out", str(run), "--attention", attention,
                         "--epochs", str(args.epochs), "--threads", str(args.threads), "--precision", "bf16",
                         "--seed", str(args.seed), "--no-progress", *shlex.split(args.train_args))
        if run.exists():
            cmd.append("--overwrite")
        start = time.perf_counter()
        _run(cmd, work / "logs" / tag / f"train-{attention}-{style}.log", args.threads)
        (run / "train_seconds.txt").write_text(f"{time.perf_counter() - start:.0f}\n")
    return run


def evaluate(work: Path, tag: str, run: Path, test_style: str, args: argparse.Namespace) -> dict[str, Any]:
    """Pointing game and BLEU-4 of one model on one style's test split (reused when done)."""
    data = work / "data" / test_style
    out = work / "eval" / tag / f"{run.name}-on-{test_style}"
    metrics = out / "metrics_test.json"
    if not metrics.is_file():
        _run(_captioner("evaluate", "--model", str(run), "--format", "coco", "--data", str(data / "captions_test.json"),
                        "--instances", str(data / "instances_test.json"), "--beam", "3", "--no-progress",
                        "--out", str(out)),
             work / "logs" / tag / f"eval-{run.name}-on-{test_style}.log", args.threads)
    return summarise(json.loads(metrics.read_text()))


def summarise(metrics: dict[str, Any]) -> dict[str, Any]:
    """The matrix's cell: strict and tolerant shape pointing, colour words, and BLEU-4."""
    pg = metrics["pointing_game"]
    colours = [v for k, v in pg["attribute_words"]["per_value"].items() if k not in SIZE_WORDS]
    words = sum(v["words"] for v in colours)
    return {"shape_words": pg["overall"]["words"], "strict": pg["overall"]["hit_rate"],
            "tolerant": pg["overall"]["hit_rate_tolerant"], "random": pg["overall"]["random_baseline"],
            "colour_words": words, "colour": sum(v["hits"] for v in colours) / words if words else None,
            "bleu4": metrics["metrics"].get("BLEU-4")}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def table(results: dict[str, Any], attention: str, styles: list[str], train_styles: list[str]) -> str:
    """Rows: the style trained on; columns: the style tested on; cells strict / tolerant / colour (%)."""
    head = "| trained on \\ tested on | " + " | ".join(styles) + " |"
    lines = [head, "|" + " --- |" * (len(styles) + 1)]
    for tr in train_styles:
        cells = []
        for te in styles:
            c = results.get(f"{attention}-{tr}", {}).get(te)
            cell = "" if c is None else f"{_pct(c['strict'])} / {_pct(c['tolerant'])} / {_pct(c['colour'])}"
            cells.append(f"**{cell}**" if tr == te and cell else cell)
        lines.append(f"| {tr} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="folder for datasets, runs, evaluations and results")
    parser.add_argument("--styles", default="textured,plain,gradient,noisy,crowded,dark", help="styles tested on")
    parser.add_argument("--train-styles", help="styles trained on (default: --styles)")
    parser.add_argument("--attention", default="soft,hard", help="attention kinds (default soft,hard)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--images", type=int, default=2000, help="images per style (80/10/10 train/val/test)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (the datasets use seed 100 + style's index)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job")
    parser.add_argument("--jobs", type=int, default=2, help="jobs at once")
    parser.add_argument("--train-args", default="", help="extra `captioner train` flags, e.g. '--score additive'")
    parser.add_argument("--tag", default="defaults", help="name of this recipe's runs and results")
    args = parser.parse_args(argv)
    work = Path(args.work).resolve()
    styles = args.styles.split(",")
    train_styles = (args.train_styles or args.styles).split(",")
    attentions = args.attention.split(",")
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda s: make_data(work, s, args.images, 100 + styles.index(s) if s in styles else 100),
                      sorted(set(styles) | set(train_styles))))
        runs = list(pool.map(lambda job: train(work, args.tag, *job, args),
                             [(a, s) for a in attentions for s in train_styles]))
        cells = list(pool.map(lambda job: (job[0].name, job[1], evaluate(work, args.tag, *job, args)),
                              [(r, te) for r in runs for te in styles]))
    results: dict[str, Any] = {}
    for name, te, cell in cells:
        results.setdefault(name, {})[te] = cell
    record = {"tag": args.tag, "train_args": args.train_args, "epochs": args.epochs, "images": args.images,
              "seed": args.seed, "date": time.strftime("%Y-%m-%d"), "results": results,
              "train_seconds": {r.name: float((r / "train_seconds.txt").read_text()) for r in runs
                                if (r / "train_seconds.txt").is_file()}}
    (work / f"{args.tag}.json").write_text(json.dumps(record, indent=1))
    for a in attentions:
        print(f"\n{a}, {args.tag} ({args.train_args or 'defaults'}), {args.epochs} epochs: "
              "shape words strict / within 15 px / colour words strict, %\n")
        print(table(results, a, styles, train_styles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
