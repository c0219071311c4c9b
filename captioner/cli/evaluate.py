"""`captioner evaluate`: caption a dataset split, score it, and write the results files.

Exit status: 0 when every image was scored, 1 when some images could not be opened (they are
listed in the results JSON and left out of the scores), 2 when the evaluation could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from ..data.formats import FORMATS, load_records
from ..model.search import DecodeOptions
from ..devices import add_device_argument
from ..errors import ConfigError
from ..evaluation.deletion import FaithfulnessOptions
from ..progress import add_progress_argument, progress_bar

#: results files written into --out; {split} is the split name
METRICS_FILE = "metrics_{split}.json"
RESULTS_FILE = "captions_{split}_results.json"
FAITHFULNESS_IMAGES = FaithfulnessOptions().images  # default --faithfulness-images


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags for ``captioner evaluate``."""
    p.add_argument("--model", help="shipped model name or checkpoint path (default: default)")
    p.add_argument("--data", required=True,
                   help="captions JSON (coco: the file of the evaluated split), Karpathy JSON, or Flickr8k folder")
    p.add_argument("--format", default="coco", choices=FORMATS, help="dataset format (default coco)")
    p.add_argument("--images", help="images folder (default: found beside the data file)")
    p.add_argument("--split", help="split to evaluate (default: test; coco: the split in the file name)")
    p.add_argument("--beam", type=int, default=3, help="beam size; 1 = greedy (default 3)")
    p.add_argument("--max-len", type=int, default=20, help="longest caption in words (default 20)")
    p.add_argument("--hard-mode", choices=["argmax", "expect", "sample"], help="hard attention location at test time")
    p.add_argument("--location-samples", type=int, default=1, metavar="K",
                   help="with --hard-mode sample: K sampled location paths per hypothesis, their word "
                        "probabilities averaged (weighted by how well each path explains the words so far) (default 1)")
    p.add_argument("--no-repeat-ngram", type=int, default=3, metavar="N",
                   help="never repeat an N-gram (nor a word twice in a row) within a caption; 0 = off (default 3)")
    p.add_argument("--instances", help="COCO instances JSON of the same images: adds the attention pointing game")
    p.add_argument("--faithfulness", action="store_true",
                   help="deletion test of attention: blank each content word's most attended cells and measure "
                        "the drop in its probability, against random and least attended cells (needs --model)")
    p.add_argument("--deletion-cells", type=int, metavar="K",
                   help="cells blanked per word in the deletion test (default: 10%% of the cells, at least 1)")
    p.add_argument("--faithfulness-images", type=int, metavar="N",
                   help=f"images in the deletion test, three re-encodings per content word "
                        f"(default {FAITHFULNESS_IMAGES})")
    p.add_argument("--out", help=f"folder for {METRICS_FILE} and {RESULTS_FILE} (COCO results format); "
                                 f"default: print only")
    p.add_argument("--batch-size", type=int, default=16, help="images decoded together (default 16)")
    p.add_argument("--limit", type=int, help="evaluate only the first N images of the split")
    p.add_argument("--no-java", action="store_true", help="score without Java: Python PTB tokenizer, no METEOR")
    p.add_argument("--predictions", help="score this COCO results file instead of decoding (no model needed)")
    p.add_argument("--skip-missing", action="store_true", help="leave out images missing on disk (with a warning)")
    add_device_argument(p)
    add_progress_argument(p)


def _check_args(args: argparse.Namespace) -> None:
    for name in ("beam", "max_len", "batch_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.no_repeat_ngram < 0:
        raise ConfigError(f"--no-repeat-ngram must be 0 (off) or more, got {args.no_repeat_ngram}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    if args.predictions and args.model:
        raise ConfigError("--predictions scores an existing results file; leave out --model (or --predictions)")
    if args.predictions and args.instances:
        raise ConfigError("the pointing game needs attention maps, which a results file lacks; "
                          "decode with --model instead of --predictions")
    if args.predictions and args.faithfulness:
        raise ConfigError("the deletion test (--faithfulness) re-scores words with the model, which a results file "
                          "lacks; decode with --model instead of --predictions")
    for name in ("deletion_cells", "faithfulness_images"):
        value = getattr(args, name)
        flag = f"--{name.replace('_', '-')}"
        if value is not None and not args.faithfulness:
            raise ConfigError(f"{flag} only applies to the deletion test; add --faithfulness")
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be at least 1, got {value}")


@contextlib.contextmanager
def _kept_warnings(sink: list[str]) -> Iterator[None]:
    """Show warnings as usual and also keep their text, so the results JSON records them."""
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
            sink.append(str(message))
            shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def _split(args: argparse.Namespace) -> str | None:
    """The split to load: COCO files hold one split, named in the file (``captions_val2014`` -> val)."""
    if args.format != "coco":
        return args.split or "test"
    from ..data.coco import coco_split_from_name

    named = coco_split_from_name(Path(args.data))
    if args.split and named and args.split != named:
        warnings.warn(f"--split {args.split} but {Path(args.data).name} looks like the {named} split; "
                      f"a COCO captions file holds one split, the one in its name", stacklevel=2)
    return args.split or named


def _safe_name(split: str) -> str:
    return re.sub(r"[^\w.-]+", "_", split).strip("_") or "split"


def run(args: argparse.Namespace) -> int:
    from ..evaluation.evaluate import (Evaluation, check_instances, check_references, coco_results, evaluate, format_table,
                           read_predictions, score, training_captions)
    from ..atomic import write_json
    from ..data.instances import load_instances

    _check_args(args)
    java = False if args.no_java else None
    kept: list[str] = []
    model_name = None
    with _kept_warnings(kept):
        split = _split(args)
        records = load_records(args.format, args.data, args.images, split=split, skip_missing=args.skip_missing)
        split = records[0].split if records else split
        records = records[: args.limit] if args.limit else records
        references = check_references(records, f"split {split!r} of {args.data}")
        instances = load_instances(args.instances) if args.instances else None
        if instances is not None:
            check_instances(records, instances)  # before loading the model and decoding anything
        train_caps, note = training_captions(args.format, args.data, args.images)
        if args.predictions:
            preds = read_predictions(args.predictions)
            metrics, div = score(preds, references, train_caps, java, source=args.predictions)
            ev = Evaluation(preds, metrics, div)
        else:
            from ..model.caption_model import load_model

            model = load_model(args.model or "default", device=args.device)
            model_name = model.name
            opts = DecodeOptions(beam=args.beam, max_len=args.max_len, hard_mode=args.hard_mode,
                                 location_samples=args.location_samples, no_repeat_ngram=args.no_repeat_ngram)
            deletion = None
            if args.faithfulness:
                deletion = FaithfulnessOptions(images=args.faithfulness_images or FAITHFULNESS_IMAGES,
                                               cells=args.deletion_cells)
            with progress_bar(len(records), "evaluate", enabled=args.progress) as bar, \
                    progress_bar(min(len(records), deletion.images) if deletion else 0, "deletion test",
                                 enabled=args.progress and deletion is not None) as del_bar:
                ev = evaluate(model, records, opts, batch_size=args.batch_size, instances=instances,
                              train_captions=train_caps, java=java, on_batch=bar.update, deletion=deletion,
                              on_deletion=del_bar.update)
    if note:
        ev.notes.append(note)
    results = {
        "model": None if args.predictions else (args.model or "default"),
        "model_name": model_name,
        "predictions_file": args.predictions,
        "data": str(args.data),
        "format": args.format,
        "split": split,
        "beam": None if args.predictions else args.beam,
        "max_len": None if args.predictions else args.max_len,
        "no_repeat_ngram": None if args.predictions else args.no_repeat_ngram,
        "hard_mode": None if args.predictions else args.hard_mode,
        "instances": args.instances,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "java": "METEOR" in ev.metrics,
        **ev.as_dict(),
        "warnings": kept,
    }
    print(format_table(results))
    if args.out:
        out = Path(args.out)
        metrics_file = out / METRICS_FILE.format(split=_safe_name(split))
        results_file = out / RESULTS_FILE.format(split=_safe_name(split))
        write_json(metrics_file, results, indent=2)
        write_json(results_file, coco_results(ev.predictions))
        print(f"wrote {metrics_file} and {results_file}")
    if ev.failures:
        for _, msg in ev.failures:
            print(f"captioner: error: {msg}", file=sys.stderr)
        print(f"captioner: {len(ev.failures)} of {len(records)} images failed and were left out of the scores",
              file=sys.stderr)
        return 1
    return 0
