"""Evaluation of a captioner on a dataset split: caption metrics, diversity, the pointing game and
the attention deletion test (:mod:`captioner.faithfulness`).

The numbers in a results table come from here, so nothing that could skew them is dropped silently:
images that fail to load are counted and listed, predictions without references are an error,
references without predictions and images missing from an instances file are warnings with counts.
Decoding goes through :meth:`CaptionModel.caption_images` (the one decoding module), scoring through
:func:`captioner.metrics.score_captions` (the official COCO code), so evaluation, validation during
training and the CLI all agree.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ..data.formats import load_records
from ..data.records import Record, read_json
from ..model.results import CaptionResult
from ..model.search import DecodeOptions
from ..errors import CaptionerError, ConfigError, DataError
from .deletion import FaithfulnessOptions, ModelScorer, check_cells, deletion_test
from ..data.images import load_image
from ..metrics.corpus import METRICS, score_captions
from ..metrics.diversity import diversity
from ..data.instances import InstancesIndex, instance_key
from .pointing import PointingItem, pointing_game
from ..data.vocab import detokenize

_SHOW = 3  # how many example ids an error message lists


def _first(ids: Sequence[Any]) -> str:
    return ", ".join(str(i) for i in ids[:_SHOW]) + (", ..." if len(ids) > _SHOW else "")


@dataclass
class Evaluation:
    """Everything one evaluation measured; :meth:`as_dict` is the results-JSON body."""

    predictions: dict[str, str]  # record image_id -> detokenised caption
    metrics: dict[str, float]
    diversity: dict[str, float]
    failures: list[tuple[str, str]] = field(default_factory=list)  # (image path, one-line reason)
    pointing: dict[str, Any] | None = None
    faithfulness: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "images": len(self.predictions),
            "failures": {"count": len(self.failures),
                         "items": [{"image": img, "error": msg} for img, msg in self.failures]},
            "metrics": self.metrics,
            "diversity": self.diversity,
        }
        if self.pointing is not None:
            out["pointing_game"] = self.pointing
        if self.faithfulness is not None:
            out["faithfulness"] = self.faithfulness
        out["notes"] = list(self.notes)
        return out


# ---------------------------------------------------------------------------------------- decoding
def caption_records(model: Any, records: Sequence[Record], opts: DecodeOptions = DecodeOptions(), *,
                    batch_size: int = 16, on_batch: Callable[[int], None] | None = None,
                    ) -> tuple[list[tuple[Record, CaptionResult]], list[tuple[Record, str]]]:
    """Caption every record's image in batches; an image that cannot be opened is a failure, not a crash.

    Returns ``(results, failures)``; ``on_batch(n)`` is called after each batch of ``n`` records.
    """
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    results: list[tuple[Record, CaptionResult]] = []
    failures: list[tuple[Record, str]] = []
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        opened = []
        for rec in chunk:
            try:
                opened.append((rec, load_image(rec.image_path)))
            except CaptionerError as exc:
                failures.append((rec, str(exc)))
        if opened:
            captions = model.caption_images([im for _, im in opened], opts)
            results.extend((rec, _compact(res)) for (rec, _), res in zip(opened, captions))
        if on_batch is not None:
            on_batch(len(chunk))
    return results, failures


def _compact(res: CaptionResult) -> CaptionResult:
    """The caption alone, with its attention maps copied out of the batch's decoding arrays.

    Beam search returns views into one (batch x beams) x steps x cells array per batch and keeps every
    hypothesis's alternatives; a split's results held for the pointing game and the deletion test would
    otherwise keep all of that alive, several times what the chosen captions' own maps take.
    """
    return dataclasses.replace(res, alphas=np.array(res.alphas, dtype=np.float32), alternatives=[])


# ------------------------------------------------------------------------------------ predictions
def check_references(records: Sequence[Record], source: str = "the data") -> dict[str, list[str]]:
    """``{image_id: [captions]}``; an empty split or an image without captions is a DataError."""
    if not records:
        raise DataError(f"empty split: {source} has no images to evaluate; check --split and --data")
    empty = [r.image_id for r in records if not r.captions]
    if empty:
        raise DataError(f"{len(empty)} images in {source} have no reference captions (first: {_first(empty)}); "
                        f"fix the captions file or leave those images out")
    return {r.image_id: list(r.captions) for r in records}


def read_predictions(path: str | Path) -> dict[str, str]:
    """A COCO results file ``[{"image_id", "caption"}, ...]`` as ``{str(image_id): caption}``."""
    data = read_json(path)
    hint = 'expected a JSON list of {"image_id": ..., "caption": "..."}'
    if not isinstance(data, list):
        raise DataError(f"{path}: not a COCO results file; {hint}")
    preds: dict[str, str] = {}
    seen: Counter[str] = Counter()
    for k, entry in enumerate(data):
        if (not isinstance(entry, dict) or not isinstance(entry.get("caption"), str)
                or not isinstance(entry.get("image_id"), (int, str)) or isinstance(entry.get("image_id"), bool)):
            raise DataError(f"{path}: entry #{k} is not an image_id/caption pair; {hint}")
        key = str(entry["image_id"])
        seen[key] += 1
        preds[key] = entry["caption"]
    dup = [k for k, n in seen.items() if n > 1]
    if dup:
        raise DataError(f"{path}: {len(dup)} image_ids have more than one caption (first: {_first(dup)}); "
                        f"keep one caption per image")
    if not preds:
        raise DataError(f"{path}: no predictions in the file; {hint}")
    return preds


def coco_results(predictions: Mapping[str, str]) -> list[dict[str, Any]]:
    """COCO results format: integer ``image_id`` when every id is a COCO number, else the id string."""
    numeric = all(k.isdigit() for k in predictions)
    return [{"image_id": int(k) if numeric else k, "caption": c} for k, c in predictions.items()]


# ------------------------------------------------------------------------------------ training set
def train_captions_file(coco_file: str | Path) -> Path:
    """The COCO train captions file that sits beside ``coco_file`` (``captions_val2014`` -> ``captions_train2014``)."""
    p = Path(coco_file)
    name = re.sub(r"(?<=captions_)[a-z]+", "train", p.name, count=1, flags=re.IGNORECASE)
    return p.with_name(name)


def training_captions(fmt: str, data: str | Path, images: str | Path | None = None) -> tuple[list[str], str | None]:
    """Captions of the train split of the same data, for the copied% of :func:`diversity`.

    Returns ``(captions, None)``, or ``([], note)`` saying why there are none: copied% is then left
    out rather than computed against nothing.
    """
    if fmt == "coco":
        path = train_captions_file(data)
        if path == Path(data) and not Path(data).name.lower().startswith("captions_"):
            return [], f"copied% skipped: cannot tell the train captions file from the name {Path(data).name}"
        if not path.is_file():
            return [], f"copied% skipped: no train split found ({path} does not exist)"
        try:
            anns = read_json(path).get("annotations", [])
            caps = [a["caption"] for a in anns if isinstance(a, dict) and isinstance(a.get("caption"), str)]
        except (DataError, AttributeError):
            return [], f"copied% skipped: {path} is not a COCO captions file"
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # missing train images do not matter here, only captions
                recs = load_records(fmt, data, images, split="train,restval" if fmt == "karpathy" else "train",
                                    skip_missing=True)
            caps = [c for r in recs for c in r.captions]
        except CaptionerError as exc:
            return [], f"copied% skipped: no train split in {data} ({exc})"
    if not caps:
        return [], f"copied% skipped: the train split of {data} has no captions"
    return caps, None


# ---------------------------------------------------------------------------------- pointing game
def check_instances(records: Sequence[Record], instances: InstancesIndex) -> int:
    """Number of records the instances file knows; none at all is an error (another dataset's file).

    Checked before decoding, so a wrong file fails in a second rather than after the whole split.
    """
    found = sum(instances.find(instance_key(r, instances)) is not None for r in records)
    if found == 0:
        raise DataError(f"{instances.source} matches none of the {len(records)} images of the split "
                        f"(by file name or id); is it the instances file of another dataset or split?")
    return found


def pointing_items(results: Sequence[tuple[Record, CaptionResult]], grid: int,
                   instances: InstancesIndex) -> list[PointingItem]:
    """One :class:`PointingItem` per captioned image: a grid x grid map per word, (row, col) cells if hard."""
    items = []
    for rec, res in results:
        att = np.asarray(res.alphas, dtype=np.float64).reshape(len(res.words), grid, grid)
        locs = [divmod(int(loc), grid) for loc in res.locations] if res.locations is not None else None
        items.append(PointingItem(instance_key(rec, instances), list(res.words), att, locs))
    return items


# ---------------------------------------------------------------------------------- deletion test
def faithfulness_test(model: Any, results: Sequence[tuple[Record, CaptionResult]], opts: FaithfulnessOptions, *,
                      batch_size: int = 16, on_image: Callable[[int], None] | None = None,
                      decoding: DecodeOptions = DecodeOptions()) -> dict[str, Any]:
    """The deletion test on the first ``opts.images`` captioned records, images reopened one at a time;
    the blanked photos are captioned with ``decoding``, the options the evaluated captions came from.

    Images are loaded lazily (a few hundred preprocessed inputs would not fit comfortably in memory);
    one that can no longer be opened is skipped and counted in ``skipped_images``.
    """
    chosen = list(results[: opts.images])

    def inputs() -> Iterator[Any]:
        for rec, _ in chosen:
            try:
                yield model.preprocess(load_image(rec.image_path))
            except CaptionerError:
                yield None

    return deletion_test(ModelScorer(model, decoding), inputs(), [res for _, res in chosen], opts.cells, opts.seed,
                         grid=model.cfg.grid, batch_size=batch_size, on_image=on_image)


# ------------------------------------------------------------------------------------------ scoring
def score(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]],
          train_captions: Sequence[str] = (), java: bool | None = None, source: str = "the predictions",
          ) -> tuple[dict[str, float], dict[str, float]]:
    """``(metrics, diversity)`` of the predictions; references must cover every prediction."""
    metrics = score_captions(dict(predictions), references, java=java, source=source)
    return metrics, diversity(list(predictions.values()), train_captions)


def evaluate(model: Any, records: Sequence[Record], opts: DecodeOptions = DecodeOptions(), *,
             batch_size: int = 16, instances: InstancesIndex | None = None, train_captions: Sequence[str] = (),
             java: bool | None = None, on_batch: Callable[[int], None] | None = None,
             deletion: FaithfulnessOptions | None = None,
             on_deletion: Callable[[int], None] | None = None) -> Evaluation:
    """Caption ``records`` with ``model`` and measure everything: metrics, diversity, pointing game.

    ``instances`` (a loaded COCO instances file) adds the pointing game; ``deletion`` adds the
    attention deletion test (:func:`faithfulness_test`, ``on_deletion(n)`` after each n images);
    ``train_captions`` adds copied% to the diversity figures; ``java`` is passed to
    :func:`score_captions`. Images that cannot be opened are listed in ``Evaluation.failures`` and left
    out of every score.
    """
    references = check_references(records)
    if instances is not None:
        check_instances(records, instances)
    if deletion is not None:
        if deletion.images < 1:
            raise ConfigError(f"--faithfulness-images must be at least 1, got {deletion.images}")
        if deletion.cells is not None:
            check_cells(deletion.cells, model.cfg.grid ** 2)  # before decoding anything
    results, failed = caption_records(model, records, opts, batch_size=batch_size, on_batch=on_batch)
    failures = [(rec.image_path, msg) for rec, msg in failed]
    if not results:
        raise DataError(f"none of the {len(records)} images could be captioned (first error: {failures[0][1]})")
    predictions = {rec.image_id: detokenize(res.words) for rec, res in results}
    decoded_refs = {k: references[k] for k in predictions}  # failures are reported above, not again
    metrics, div = score(predictions, decoded_refs, train_captions, java)
    pointing = None
    if instances is not None:
        pointing = pointing_game(pointing_items(results, model.cfg.grid, instances), instances)
    faithful = None
    if deletion is not None:
        faithful = faithfulness_test(model, results, deletion, batch_size=batch_size, on_image=on_deletion,
                                     decoding=opts)
    return Evaluation(predictions, metrics, div, failures, pointing, faithful)


# -------------------------------------------------------------------------------------------- table
def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v: float | None, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


def _faithfulness_lines(fa: Mapping[str, Any]) -> list[str]:
    """The deletion test: a header line, then one row of mean probability drops and the two ratios."""
    head = (f"deletion test: {fa['words']} words in {fa['images']} images, k={fa['k']} of {fa['cells']} cells "
            f"blanked, mean p(word) {_num(fa['p_original'])}")
    if fa.get("skipped_images"):
        head += f" ({fa['skipped_images']} images could not be reopened)"
    lines = [head, f"{'blanked cells':<16}{'attended':>10}{'random':>10}{'least':>10}{'att/rand':>10}{'att/least':>10}"]
    rows = [("p(word) drop", fa["drop"], fa["ratio"])]
    if "removed" in fa:
        rows.append(("word gone", fa["removed"], fa["removed_ratio"]))
    for name, value, ratio in rows:
        lines.append(f"{name:<16}{_num(value['attended']):>10}{_num(value['random']):>10}{_num(value['least']):>10}"
                     f"{_num(ratio['attended_random'], '.2f'):>10}{_num(ratio['attended_least'], '.2f'):>10}")
    return lines


def format_table(results: Mapping[str, Any]) -> str:
    """A small aligned text table of a results dict (:meth:`Evaluation.as_dict` plus run metadata)."""
    lines = []
    head = f"{results.get('split', '?')} split, {results['images']} images"
    if results["failures"]["count"]:
        head += f" ({results['failures']['count']} failed)"
    if results.get("model"):
        head += f", model {results['model']}, beam {results.get('beam')}"
    lines += [head, f"{'metric':<10}{'score':>8}"]
    for name in METRICS:
        value = results["metrics"].get(name)
        lines.append(f"{name:<10}{value:>8.2f}" if value is not None else f"{name:<10}{'-':>8}  (needs Java)")
    d = results["diversity"]
    div = (f"diversity: {d['distinct_pct']:.1f}% distinct captions, {d['vocab_size']:.0f} words used, "
           f"{d['avg_length']:.1f} words per caption")
    if "copied_pct" in d:
        div += f", {d['copied_pct']:.1f}% copied from training"
    lines.append(div)
    pg = results.get("pointing_game")
    if pg is not None:
        lines.append(f"{'pointing game':<16}{'words':>7}{'hit rate':>10}{'<=15 px':>9}{'random':>9}{'centre':>9}")
        rows = list(pg["per_category"].items()) + [("overall", pg["overall"])]
        attrs = pg.get("attribute_words", {}).get("overall", {})
        if attrs.get("words"):
            rows.append(("attribute words", attrs))
        for name, row in rows:
            lines.append(f"{name:<16}{row['words']:>7}{_pct(row['hit_rate']):>10}{_pct(row['hit_rate_tolerant']):>9}"
                         f"{_pct(row['random_baseline']):>9}{_pct(row['center_baseline']):>9}")
    fa = results.get("faithfulness")
    if fa is not None:
        lines += _faithfulness_lines(fa)
    for note in results.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)
