"""How well familiarity separates a model's dev photos from photos unlike its training data.

``python benchmarks/bench_familiarity.py --model M --format flickr8k --data FLICKR8K`` scores the dev
split (in-domain) against the out-of-domain photos: ``demo/``, ``benchmarks/ood/`` (licensed photos,
see its LICENSES.md) and 100 synthetic-shape photos made with ``captioner synth --seed 1`` in a
temporary folder, and prints the ROC AUC per group and over all of them. A model without familiarity
data is first fitted into a temporary copy (train split: centroids; dev split: calibration), exactly as
``captioner familiarity fit`` does; pass ``--val-data`` for COCO-style data.

Needs the dataset (not shipped): it is a measurement of the shipped models, not a smoke test.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from captioner.data import synth  # noqa: E402
from captioner.cli.main import main as captioner  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="flickr8k-soft", help="model name or checkpoint (default flickr8k-soft)")
    parser.add_argument("--format", default="flickr8k", help="dataset format (default flickr8k)")
    parser.add_argument("--data", required=True, help="the dataset (Flickr8k folder or captions JSON)")
    parser.add_argument("--val-data", help="dev photos' captions JSON (COCO-style data)")
    parser.add_argument("--synth-images", type=int, default=100, help="synthetic OOD photos (default 100; 0 = none)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    common = ["--format", args.format, "--threads", str(args.threads), "--no-progress"]
    with tempfile.TemporaryDirectory(prefix="bench_familiarity.") as tmp:
        ood = [str(ROOT / "demo"), str(ROOT / "benchmarks" / "ood")]
        if args.synth_images:
            synth.generate(Path(tmp) / "shapes", args.synth_images, seed=1)
            ood.append(str(Path(tmp) / "shapes" / "images"))
        from captioner.model.caption_model import load_model

        model = args.model
        if load_model(model).familiarity is None:
            model = str(Path(tmp) / "fitted.safetensors")
            fit = ["familiarity", "fit", args.model, *common, "--data", args.data, "--out", model]
            if args.val_data:
                fit += ["--val-data", args.val_data]
            if captioner(fit):
                return 1
        val = args.val_data or args.data
        return captioner(["familiarity", "auc", "--model", model, *common, "--data", val, "--ood", *ood,
                          *(["--json"] if args.json else [])])


if __name__ == "__main__":
    sys.exit(main())
