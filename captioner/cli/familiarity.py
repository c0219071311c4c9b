"""`captioner familiarity fit | auc`: put familiarity data into a checkpoint, and measure how well it separates.

``fit`` reads the training split (centroids) and the dev split (calibration) of a dataset through the
model's own encoder and writes a new checkpoint: the input is never replaced unless ``--overwrite``
is given. ``auc`` scores the dev photos (in-domain) against photos unlike them (out-of-domain) and
prints the ROC AUC of familiarity: 1.0 when every in-domain photo is more familiar than every other.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``familiarity`` command and its two subcommands."""
    from ..data.formats import FORMATS
    from ..devices import add_device_argument
    from ..model.familiarity import DEFAULT_CENTROIDS, DEFAULT_POOLING, DEFAULT_THRESHOLD, POOLINGS

    sub = p.add_subparsers(dest="familiarity_command", metavar="SUBCOMMAND")
    sub.required = True

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--format", required=True, choices=FORMATS, help="dataset format")
        q.add_argument("--data", required=True,
                       help="the dataset: Flickr8k folder, Karpathy JSON or COCO captions JSON")
        q.add_argument("--images", help="image folder (default: found beside the data)")
        q.add_argument("--skip-missing", action="store_true", help="leave out listed images that are missing")
        q.add_argument("--batch-size", type=int, default=16, help="photos encoded together (default 16)")
        q.add_argument("--cache-dir", help="feature cache to read photos from when `captioner train` cached them "
                                           "(default: $CAPTIONER_CACHE or ~/.cache/captioner; never written)")
        q.add_argument("--write-cache", action="store_true",
                       help="also write the photos' frozen encoder features to the cache, as `captioner train` does, "
                            "so models that share the encoder (flickr8k-soft and -hard) encode them only once")
        q.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
        q.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
        add_device_argument(q)

    q = sub.add_parser("fit", help="fit familiarity (train-split centroids, dev-split calibration) into a checkpoint",
                       description="Write MODEL plus familiarity data to --out: k-means centroids of the training "
                                   "photos' pooled encoder features and the dev photos' distances to them.")
    q.add_argument("model", help="model name or checkpoint path")
    common(q)
    q.add_argument("--out", required=True, help="the .safetensors file to write (never the input, unless --overwrite)")
    q.add_argument("--overwrite", action="store_true", help="allow --out to be the input checkpoint itself")
    q.add_argument("--split", default="train", help="split for the centroids (default train)")
    q.add_argument("--val-data", help="dataset file of the dev photos (COCO: captions_val.json; default: --data)")
    q.add_argument("--val-split", default="val", help="split for the calibration (default val)")
    q.add_argument("--centroids", type=int, default=DEFAULT_CENTROIDS,
                   help=f"k-means centroids (default {DEFAULT_CENTROIDS})")
    q.add_argument("--seed", type=int, default=0, help="k-means seed (default 0)")
    q.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"below this familiarity `caption` prints a note (default {DEFAULT_THRESHOLD})")
    q.add_argument("--pooling", choices=POOLINGS, default=DEFAULT_POOLING,
                   help=f"how a photo's grid becomes one vector (default {DEFAULT_POOLING})")

    q = sub.add_parser("auc", help="ROC AUC of familiarity: dev photos (in-domain) vs out-of-domain photos",
                       description="Score the in-domain split and the --ood photos with the model's familiarity "
                                   "and print the ROC AUC (1.0: every in-domain photo is more familiar).")
    q.add_argument("--model", required=True, help="model name or checkpoint path fitted with `familiarity fit`")
    common(q)
    q.add_argument("--split", default="val", help="in-domain split (default val)")
    q.add_argument("--ood", nargs="+", required=True, metavar="DIR_OR_FILE",
                   help="out-of-domain photos: files or folders (searched recursively); each is also scored alone")
    q.add_argument("--json", action="store_true", help="print the figures as JSON")


def _records(fmt: str, data: str, images: str | None, split: str, skip_missing: bool) -> list[str]:
    from ..data.formats import load_records

    return [r.image_path for r in load_records(fmt, data, images, split=split, skip_missing=skip_missing)]


def _setup(args: argparse.Namespace):
    import torch

    from ..model.caption_model import load_model

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    return load_model(args.model, device=args.device)


def _vectors(model: Any, paths: list[str], args: argparse.Namespace, pooling: str, progress: bool):
    """Pooled vectors of ``paths``, filling the feature cache first with ``--write-cache``."""
    from ..evaluation.familiarity import photo_vectors
    from ..data.feature_cache import cache_features

    if args.write_cache:
        cache_features(model.encoder, paths, args.cache_dir, progress=progress, device=model.device)
    return photo_vectors(model, paths, pooling=pooling, batch_size=args.batch_size, cache_dir=args.cache_dir,
                         progress=progress)


def run(args: argparse.Namespace) -> int:
    if args.familiarity_command == "fit":
        return run_fit(args)
    return run_auc(args)


def run_fit(args: argparse.Namespace) -> int:
    from ..evaluation.familiarity import fingerprint, fit, save_with_familiarity
    from ..model.registry import resolve_model_path

    if not 0 <= args.threshold <= 1:  # checked before minutes of encoding, not after
        raise ConfigError(f"--threshold must be from 0 to 1, got {args.threshold}")
    if args.centroids < 1:
        raise ConfigError(f"--centroids must be at least 1, got {args.centroids}")
    src = resolve_model_path(args.model)
    out = Path(args.out)
    if out.exists() and out.resolve() == src.resolve() and not args.overwrite:
        raise ConfigError(f"--out {out} is the input checkpoint; choose another file (or pass --overwrite)")
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; pass a file name such as model.safetensors")
    train = _records(args.format, args.data, args.images, args.split, args.skip_missing)
    val_data = args.val_data or args.data
    if args.format == "coco" and not args.val_data:
        raise ConfigError("--format coco needs --val-data captions_val.json for the dev photos "
                          "(a COCO file holds one split)")
    dev = _records(args.format, val_data, args.images if not args.val_data else None, args.val_split, args.skip_missing)
    if set(map(os.path.abspath, train)) & set(map(os.path.abspath, dev)):
        raise DataError("the training and dev photos overlap; calibrate on photos the centroids were not fitted to")
    model = _setup(args)
    t0 = time.time()
    train_vec, train_used, _ = _vectors(model, train, args, args.pooling, args.progress)
    dev_vec, dev_used, _ = _vectors(model, dev, args, args.pooling, args.progress)
    info = {"data": Path(args.data).name, "format": args.format, "split": args.split, "train_photos": len(train_used),
            "val_split": args.val_split, "seed": args.seed, "train_list": fingerprint(train_used),
            "dev_list": fingerprint(dev_used)}
    fam = fit(train_vec, dev_vec, k=args.centroids, seed=args.seed, threshold=args.threshold,
              pooling=args.pooling, info=info)
    save_with_familiarity(src, out, fam)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): {fam.centroids.shape[0]} centroids from "
          f"{len(train_used)} {args.split} photos, calibrated on {len(dev_used)} {args.val_split} photos "
          f"(median dev distance {float(sorted(fam.dev_distances)[len(fam.dev_distances) // 2]):.3f}, "
          f"threshold {fam.threshold:g}) in {time.time() - t0:.0f} s")
    return 0


def run_auc(args: argparse.Namespace) -> int:
    from ..evaluation.familiarity import photo_vectors, roc_auc
    from ..data.images import find_images

    inside = _records(args.format, args.data, args.images, args.split, args.skip_missing)
    groups: dict[str, list[str]] = {}
    for raw in args.ood:
        found, problems = find_images([raw])
        if problems:
            raise DataError(problems[0][1])
        groups[raw] = [str(p) for p in found]
    model = _setup(args)
    fam = model.familiarity
    if fam is None:
        raise ConfigError(f"model {args.model} has no familiarity data; add it with "
                          "`captioner familiarity fit MODEL --format ... --data ... --out NEW.safetensors`")
    vec, _, _ = _vectors(model, inside, args, fam.pooling, args.progress)
    in_dist = fam.distances(vec)
    in_fam = fam.score_distances(in_dist)
    report: dict[str, Any] = {"model": model.name, "split": args.split, "in_domain": len(in_dist),
                              "threshold": fam.threshold,
                              "in_domain_flagged": round(float((in_fam < fam.threshold).mean()), 4), "groups": []}
    all_dist: list[float] = []
    all_fam: list[float] = []
    for raw, paths in groups.items():
        v, _, _ = photo_vectors(model, paths, pooling=fam.pooling, batch_size=args.batch_size, progress=False)
        d = fam.distances(v)
        f = fam.score_distances(d)
        all_dist.extend(d.tolist())
        all_fam.extend(f.tolist())
        # the ROC AUC of familiarity is that of -distance: the same order, without the ties at 0 and 1
        report["groups"].append({"ood": raw, "photos": len(d), "auc": round(roc_auc(-in_dist, -d), 4),
                                 "flagged": round(float((f < fam.threshold).mean()), 4),
                                 "median_familiarity": round(float(sorted(f)[len(f) // 2]), 4)})
    report["ood"] = len(all_dist)
    report["auc"] = round(roc_auc(-in_dist, [-x for x in all_dist]), 4)
    report["auc_of_familiarity"] = round(roc_auc(in_fam, all_fam), 4)
    report["ood_flagged"] = round(sum(x < fam.threshold for x in all_fam) / len(all_fam), 4)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    width = max(len(g["ood"]) for g in report["groups"])
    for g in report["groups"]:
        print(f"  {g['ood']:<{width}}  {g['photos']:5d} photos  AUC {g['auc']:.3f}  flagged {g['flagged']:.0%}  "
              f"median familiarity {g['median_familiarity']:.2f}")
    print(f"ROC AUC {report['auc']:.3f}: {report['in_domain']} {args.split} photos vs {report['ood']} out-of-domain "
          f"photos ({model.name}); below the threshold {fam.threshold:g}: {report['ood_flagged']:.0%} of the "
          f"out-of-domain photos, {report['in_domain_flagged']:.0%} of the {args.split} photos")
    sys.stdout.flush()
    return 0
