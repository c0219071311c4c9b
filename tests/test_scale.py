"""The data path at COCO's size: what must stay linear and small as the dataset grows.

Everything here runs on tiny data made in tmp_path; benchmarks/bench_coco_scale.py measures the real sizes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from captioner.training.batches import make_pairs
from captioner.data.records import Record
from captioner.data.feature_cache import FeatureStore
from captioner.data.vocab import Vocab


def test_make_pairs_packs_every_caption_as_its_own_encoding():
    """The vectorised packing gives exactly the per-caption encodings, padded, in record order."""
    records = [
        Record("a.jpg", ("a red circle", "the small blue square above a green triangle left of the red circle"),
               "train", "1"),
        Record("b.jpg", ("a square",), "train", "2"),  # unreadable below: left out
        Record("c.jpg", ("blue", "a large red triangle", "green circle"), "train", "3"),
        Record("d.jpg", (), "train", "4"),  # no captions: left out
    ]
    paths = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    store = FeatureStore(np.zeros((4, 1), np.float16), paths, np.array([True, False, True, True]))
    vocab = Vocab.build([c for r in records for c in r.captions], min_count=1)
    pairs = make_pairs(records, store, vocab, max_len=8)

    expected = [vocab.encode(c, max_len=8) for r in (records[0], records[2]) for c in r.captions]
    assert pairs.tokens.dtype == torch.long and pairs.lengths.dtype == torch.long
    assert pairs.tokens.shape == (5, max(map(len, expected)))
    assert pairs.lengths.tolist() == [len(s) for s in expected]
    for row, seq in zip(pairs.tokens.tolist(), expected):
        assert row == seq + [vocab.pad_id] * (pairs.tokens.shape[1] - len(seq))
    assert pairs.image_rows.tolist() == [0, 2]
    assert pairs.starts.tolist() == [0, 2, 5]
    assert [r.image_id for r in pairs.records] == ["1", "3"]


def test_evaluation_keeps_only_each_images_own_attention(tmp_path, tiny_checkpoint):
    """Results held for a whole split must not pin the beam search's per-batch arrays nor its alternatives."""
    from captioner.model.search import DecodeOptions
    from captioner.evaluation.evaluate import caption_records
    from captioner.data.images import load_image
    from captioner.model.caption_model import load_model
    from conftest import random_pngs

    model = load_model(str(tiny_checkpoint))
    paths = random_pngs(tmp_path, 4)
    records = [Record(p, ("a red circle",), "val", str(i)) for i, p in enumerate(paths)]
    opts = DecodeOptions(beam=3, max_len=6)
    results, failures = caption_records(model, records, opts, batch_size=4)
    assert not failures and len(results) == 4
    raw = model.caption_images([load_image(p) for p in paths], opts)
    assert raw[0].alphas.base is not None  # what decoding returns: views into the batch's array
    for (rec, res), full in zip(results, raw):
        assert res.alphas.base is None and res.alphas.flags.owndata  # its own small copy
        assert res.alternatives == []
        assert res.words == full.words and np.array_equal(res.alphas, full.alphas)


def test_training_log_times_validation(shapes, tmp_path):
    """Each epoch's row says how long validation took, so it can be told apart from training at scale."""
    from captioner.training.loop import main as train_main
    from conftest import train_config

    train_main(train_config(shapes, tmp_path / "run", epochs=1))
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["val_seconds"] > 0 and row["epoch_seconds"] > 0


def test_coco_scale_benchmark_runs_end_to_end(tmp_path):
    """benchmarks/bench_coco_scale.py at a toy size: synth, train (tiny model), evaluate, one JSON of figures."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_coco_scale

    out = tmp_path / "figures.json"
    assert bench_coco_scale.main(["--images", "30", "--work", str(tmp_path / "work"), "--eval-limit", "3",
                                  "--json", str(out), "--", "--batch-size", "4", "--grid", "2",
                                  "--min-word-count", "1", "--val-beam", "1"]) == 0
    fig = json.loads(out.read_text())
    assert fig["train_images"] == 24 and fig["train_captions"] == 120
    assert fig["train"]["captions_per_s"] > 0 and fig["train"]["peak_anon_mb"] > 0
    assert fig["evaluate"]["images"] == 3
    assert not (tmp_path / "work" / "data").exists()  # the data is removed unless --keep


def _as_flickr8k(shapes, root):
    """The synthetic COCO files rewritten in Flickr8k's layout: images/, Flickr8k.token.txt, split lists."""
    import shutil

    (root / "images").mkdir(parents=True)
    tokens, lists = [], {"train": [], "val": []}
    for split, list_name in (("train", "trainImages"), ("val", "devImages")):
        coco = json.loads((shapes / f"captions_{split}.json").read_text())
        names = {im["id"]: im["file_name"] for im in coco["images"]}
        for im in coco["images"]:
            shutil.copy(shapes / "images" / im["file_name"], root / "images" / Path(im["file_name"]).name)
            lists[split].append(Path(im["file_name"]).name)
        for k, ann in enumerate(coco["annotations"]):
            tokens.append(f"{Path(names[ann['image_id']]).name}#{k % 5}\t{ann['caption']}")
        (root / f"Flickr_8k.{list_name}.txt").write_text("".join(n + "\n" for n in lists[split]))
    (root / "Flickr8k.token.txt").write_text("\n".join(tokens) + "\n")
    return root


def test_coco_scale_benchmark_measures_flickr8k_the_same_way(shapes, tmp_path):
    """--flickr8k DIR: the figures to set beside the synthetic ones, from the same commands and probes."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_coco_scale

    flickr = _as_flickr8k(shapes, tmp_path / "flickr8k")
    out = tmp_path / "figures.json"
    assert bench_coco_scale.main(["--flickr8k", str(flickr), "--work", str(tmp_path / "work"), "--eval-limit", "2",
                                  "--json", str(out), "--", "--batch-size", "4", "--grid", "2",
                                  "--min-word-count", "1", "--val-beam", "1", "--limit-batches", "2"]) == 0
    fig = json.loads(out.read_text())
    train = json.loads((shapes / "captions_train.json").read_text())
    assert fig["dataset"] == "flickr8k" and "synth" not in fig and fig["images"] == fig["train_images"] + fig["val_images"]
    assert fig["train_images"] == len(train["images"]) and fig["train_captions"] == len(train["annotations"])
    assert fig["train"]["captions_per_s"] > 0 and fig["evaluate"]["images"] == 2


def test_cached_rows_are_read_with_pread_not_through_the_map(tmp_path, monkeypatch):
    """Rows of a cache file come back exactly as stored, read one pread per row (no read-ahead through the map)."""
    import os

    arr = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float16, shape=(50, 3, 7))
    arr[:] = np.random.default_rng(0).standard_normal(arr.shape).astype(np.float16)
    arr.flush()
    del arr
    mapped = np.load(tmp_path / "f.npy", mmap_mode="r")
    store = FeatureStore(mapped, [str(i) for i in range(50)], np.ones(50, bool))
    calls = []
    real = os.preadv
    monkeypatch.setattr(os, "preadv", lambda fd, bufs, off: calls.append(off) or real(fd, bufs, off))
    rows = [7, 3, 49, 3, 0, -1]  # unsorted, repeated, negative
    got = store.get(torch.tensor(rows))
    assert got.dtype == torch.float32 and got.shape == (6, 3, 7)
    assert torch.equal(got, torch.from_numpy(np.asarray(mapped)[rows].astype(np.float32)))
    assert len(calls) == len(rows)
    assert store.get([]).shape == (0, 3, 7)
    with np.testing.assert_raises(IndexError):
        store.get([50])
    # a slice of the map, or an array in memory, is read as an array
    part = FeatureStore(mapped[10:20], [str(i) for i in range(10)], np.ones(10, bool))
    assert torch.equal(part.get([0, 9]), torch.from_numpy(np.asarray(mapped)[[10, 19]].astype(np.float32)))
    import pickle

    assert torch.equal(pickle.loads(pickle.dumps(store)).get([5]), got[:0].new_tensor(np.asarray(mapped)[[5]]))


def _padded_pass(attention: str, rows: int, monkeypatch, train: bool) -> tuple[torch.Tensor, ...]:
    """Teacher forcing with each step rounded up to ``rows`` running captions: outputs and gradients."""
    from captioner.model import decoder as decoder_module
    from captioner.model.config import ModelConfig

    monkeypatch.setattr(decoder_module, "STEP_ROWS", rows)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=30, feature_dim=40, grid=3, embed_dim=16, hidden_dim=24, attention_dim=12, proj_dim=20,
                      attention=attention, dropout=0.0, features="head")
    dec = decoder_module.Decoder(cfg).train(train)
    g = torch.Generator().manual_seed(1)
    B, T = 21, 9
    lengths = torch.randint(3, T + 1, (B,), generator=g).sort(descending=True).values
    caps = torch.randint(4, 30, (B, T), generator=g)
    caps[:, 0] = 1
    for i, n in enumerate(lengths.tolist()):
        caps[i, n - 1], caps[i, n:] = 2, 0
    feats = torch.randn(7, 9, 40, generator=g)
    out = dec(feats, caps, lengths, image_index=torch.arange(B) % 7, hard_training=decoder_module.HardTraining(expected_prob=1.0))
    (out.logits.square().mean() + out.alpha_sum.square().mean()).backward()
    grads = [p.grad.clone() for p in dec.parameters() if p.grad is not None]
    return (out.logits.detach(), out.targets, out.caption_index, out.alpha_sum.detach(), *grads)


def test_rounding_the_running_captions_up_changes_no_output_or_gradient(monkeypatch):
    """The finished captions a padded step carries along must not leak into any output or gradient."""
    for attention, train in (("soft", True), ("local", True), ("hard", False), ("hard", True)):
        exact = _padded_pass(attention, 1, monkeypatch, train)
        for rows in (4, 16):
            padded = _padded_pass(attention, rows, monkeypatch, train)
            assert len(padded) == len(exact)
            for a, b in zip(exact, padded):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_limit_batches_stops_each_epoch_early(shapes, tmp_path):
    """--limit-batches N trains N batches per epoch (benchmarks at COCO size), and validation still runs."""
    from captioner.training.loop import main as train_main
    from conftest import train_config

    steps: list[int] = []
    train_main(train_config(shapes, tmp_path / "all", epochs=1), on_step=steps.append)
    limited: list[int] = []
    train_main(train_config(shapes, tmp_path / "two", epochs=2, limit_batches=2), on_step=limited.append)
    assert len(steps) > 2 and limited == [0, 1, 0, 1]
    rows = [json.loads(r) for r in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["val_seconds"] > 0 for r in rows)
