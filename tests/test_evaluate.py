"""`captioner evaluate` on a tiny synthetic dataset: results files, metrics, pointing game, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from captioner.cli.main import main
from captioner.data.records import Record
from captioner.model.results import CaptionResult
from captioner.errors import DataError
from captioner.evaluation.evaluate import (check_references, coco_results, pointing_items, read_predictions,
                                training_captions)
from captioner.metrics.corpus import METRICS
from captioner.data.instances import ImageBoxes, InstancesIndex

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="Java not installed (METEOR, PTB tokenizer)")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """12 synthetic images: 6 train, 3 val, 3 test, with captions_* and instances_* files."""
    from captioner.data.synth import generate

    root = tmp_path_factory.mktemp("eval") / "synth"
    generate(root, 12, seed=0, split_fractions=(0.5, 0.25, 0.25), workers=1)
    return root


def _test_ids(data: Path) -> set[int]:
    return {im["id"] for im in json.loads((data / "captions_test.json").read_text())["images"]}


def _evaluate(*args: str) -> int:
    return main(["evaluate", *args])


def test_writes_coco_results_and_metrics(data, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    code = _evaluate("--model", str(tiny_checkpoint), "--data", str(data / "captions_test.json"), "--split", "test",
                     "--out", str(out), "--no-java", "--beam", "2", "--batch-size", "2")
    assert code == 0
    preds = json.loads((out / "captions_test_results.json").read_text())
    assert isinstance(preds, list)
    assert all(set(p) == {"image_id", "caption"} for p in preds)
    assert all(isinstance(p["image_id"], int) and isinstance(p["caption"], str) and p["caption"] for p in preds)
    assert {p["image_id"] for p in preds} == _test_ids(data)  # every image, batched across a batch boundary

    res = json.loads((out / "metrics_test.json").read_text())
    assert set(res["metrics"]) == set(METRICS) - {"METEOR"}  # --no-java: everything but METEOR
    assert res["java"] is False
    assert (res["split"], res["beam"], res["images"], res["failures"]["count"]) == ("test", 2, 3, 0)
    assert res["model"] == str(tiny_checkpoint) and res["date"]
    assert "copied_pct" in res["diversity"]  # the train split beside the test file was found
    assert "pointing_game" not in res
    table = capsys.readouterr().out
    assert "BLEU-4" in table and "CIDEr" in table


@needs_java
def test_all_metrics_with_java(data, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    assert _evaluate("--model", str(tiny_checkpoint), "--data", str(data / "captions_test.json"),
                     "--out", str(out), "--limit", "1", "--beam", "1") == 0
    res = json.loads((out / "metrics_test.json").read_text())
    assert set(res["metrics"]) == set(METRICS)
    assert res["java"] is True and res["images"] == 1
    assert all(0.0 <= v <= 1000.0 for v in res["metrics"].values())


@pytest.mark.parametrize("attention", ["soft", "hard"])
def test_pointing_game_with_instances(data, tiny_checkpoint, tiny_hard_checkpoint, tmp_path, capsys, attention):
    ckpt = tiny_checkpoint if attention == "soft" else tiny_hard_checkpoint
    out = tmp_path / "out"
    assert _evaluate("--model", str(ckpt), "--data", str(data / "captions_test.json"), "--no-java", "--beam", "1",
                     "--instances", str(data / "instances_test.json"), "--out", str(out)) == 0
    pg = json.loads((out / "metrics_test.json").read_text())["pointing_game"]
    assert pg["images"] == 3 and pg["unmatched_images"] == 0
    rows = [pg["overall"], *pg["per_category"].values()]
    for row in rows:
        assert {"hits", "words", "hit_rate", "random_baseline", "center_baseline"} <= set(row)
        if row["words"]:
            assert 0.0 <= row["random_baseline"] <= 1.0 and 0.0 <= row["center_baseline"] <= 1.0
    assert pg["overall"]["words"] == sum(r["words"] for r in pg["per_category"].values())
    table = capsys.readouterr().out
    assert "pointing game" in table and "random" in table and "centre" in table


def test_pointing_items_reshape_and_hard_locations():
    rec = Record("/x/images/test/00000001.jpg", ("a circle",), "test", "1")
    alphas = np.arange(2 * 9, dtype=np.float32).reshape(2, 9)
    res = CaptionResult(["red", "circle"], [4, 5], -1.0, -2.0, alphas, locations=[5, 7])
    index = InstancesIndex([ImageBoxes(1, "test/00000001.jpg", 90, 90, (("circle", (0, 0, 30, 30)),))], ["circle"])
    (item,) = pointing_items([(rec, res)], 3, index)
    assert item.attention.shape == (2, 3, 3)
    assert item.attention[1, 1, 2] == alphas[1, 5]  # row-major grid: cell 5 is row 1, col 2
    assert item.locations == [(1, 2), (2, 1)]
    assert item.words == ["red", "circle"]
    assert item.image == rec.image_path  # found in the instances file by its file name


def test_instances_of_another_dataset_is_an_error(data, tiny_checkpoint, capsys):
    code = _evaluate("--model", str(tiny_checkpoint), "--data", str(data / "captions_test.json"), "--no-java",
                     "--instances", str(data / "instances_train.json"))
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("captioner: error: ") and "instances_train.json" in err and "another dataset" in err
    assert len(err.strip().splitlines()) == 1


def test_captions_file_given_as_instances_is_an_error(data, tiny_checkpoint, capsys):
    code = _evaluate("--model", str(tiny_checkpoint), "--data", str(data / "captions_test.json"), "--no-java",
                     "--instances", str(data / "captions_test.json"))
    assert code == 2
    assert "not a COCO instances file" in capsys.readouterr().err


def test_empty_split_is_an_error(data, tiny_checkpoint, tmp_path, capsys):
    empty = json.loads((data / "captions_test.json").read_text())
    empty["annotations"] = []  # images listed, but none has a caption
    (tmp_path / "captions_test.json").write_text(json.dumps(empty))
    code = _evaluate("--model", str(tiny_checkpoint), "--data", str(tmp_path / "captions_test.json"),
                     "--images", str(data / "images"), "--no-java")
    assert code == 2
    assert "no images in split 'test'" in capsys.readouterr().err
    with pytest.raises(DataError, match="empty split"):
        check_references([])


def test_reference_without_captions_is_an_error():
    with pytest.raises(DataError, match="1 images .* no reference captions"):
        check_references([Record("a.jpg", ("a cat",), "test", "a.jpg"), Record("b.jpg", (), "test", "b.jpg")])


def test_bad_image_is_reported_counted_and_skipped(data, tiny_checkpoint, tmp_path, capsys):
    images = tmp_path / "images"
    shutil.copytree(data / "images", images)
    victim = sorted((images / "test").iterdir())[0]
    victim.write_bytes(b"not a jpeg at all")
    out = tmp_path / "out"
    code = _evaluate("--model", str(tiny_checkpoint), "--data", str(data / "captions_test.json"), "--images",
                     str(images), "--no-java", "--beam", "1", "--out", str(out))
    assert code == 1  # ran, but not every image was scored
    res = json.loads((out / "metrics_test.json").read_text())
    assert res["images"] == 2 and res["failures"]["count"] == 1
    assert res["failures"]["items"][0]["image"].endswith(victim.name)
    assert len(json.loads((out / "captions_test_results.json").read_text())) == 2
    assert "1 of 3 images" in capsys.readouterr().err


def test_predictions_file_scored_without_a_model(data, tmp_path, capsys):
    ids = sorted(_test_ids(data))
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps([{"image_id": i, "caption": "a red circle"} for i in ids[:2]]))
    out = tmp_path / "out"
    assert _evaluate("--data", str(data / "captions_test.json"), "--predictions", str(preds), "--no-java",
                     "--out", str(out)) == 0
    res = json.loads((out / "metrics_test.json").read_text())
    assert res["images"] == 2 and res["model"] is None
    assert any("1 of 3 reference images have no prediction" in w for w in res["warnings"])

    preds.write_text(json.dumps([{"image_id": 99999, "caption": "a red circle"}]))
    assert _evaluate("--data", str(data / "captions_test.json"), "--predictions", str(preds), "--no-java") == 2
    assert "1 of 1 images in" in capsys.readouterr().err  # a prediction for an image without references


def test_read_predictions_rejects_malformed_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"image_id": 1, "caption": "x"}))
    with pytest.raises(DataError, match="not a COCO results file"):
        read_predictions(bad)
    bad.write_text(json.dumps([{"image_id": 1, "caption": "x"}, {"image_id": 1, "caption": "y"}]))
    with pytest.raises(DataError, match="more than one caption"):
        read_predictions(bad)
    bad.write_text(json.dumps([{"image": "a.jpg", "caption": "x"}]))
    with pytest.raises(DataError, match="entry #0"):
        read_predictions(bad)


def test_coco_results_ids():
    assert coco_results({"391895": "a man"}) == [{"image_id": 391895, "caption": "a man"}]
    assert coco_results({"1000268201_693b08cb0e.jpg": "a girl"}) == [
        {"image_id": "1000268201_693b08cb0e.jpg", "caption": "a girl"}]


def test_training_captions_missing_train_split(data, tmp_path):
    lone = tmp_path / "captions_test.json"
    shutil.copy(data / "captions_test.json", lone)
    caps, note = training_captions("coco", lone)
    assert caps == [] and "copied% skipped" in note
    caps, note = training_captions("coco", data / "captions_test.json")
    assert note is None and len(caps) == 6 * 5  # 6 train images, 5 captions each


def test_karpathy_format_keeps_file_name_ids(data, tiny_checkpoint, tmp_path):
    """Records that are not COCO ids (Karpathy without cocoid, Flickr8k) keep their string image_id."""
    images = []
    for split in ("train", "test"):
        coco = json.loads((data / f"captions_{split}.json").read_text())
        caps: dict[int, list[str]] = {}
        for ann in coco["annotations"]:
            caps.setdefault(ann["image_id"], []).append(ann["caption"])
        images += [{"filename": Path(im["file_name"]).name, "filepath": split, "split": split,
                    "sentences": [{"raw": c} for c in caps[im["id"]]]} for im in coco["images"]]
    (tmp_path / "dataset_synth.json").write_text(json.dumps({"images": images}))
    out = tmp_path / "out"
    assert _evaluate("--model", str(tiny_checkpoint), "--format", "karpathy", "--data",
                     str(tmp_path / "dataset_synth.json"), "--images", str(data / "images"), "--no-java",
                     "--beam", "1", "--limit", "2", "--out", str(out)) == 0
    preds = json.loads((out / "captions_test_results.json").read_text())
    test_names = sorted(im["filename"] for im in images if im["split"] == "test")
    assert [p["image_id"] for p in preds] == test_names[:2]
    res = json.loads((out / "metrics_test.json").read_text())
    assert res["split"] == "test" and res["images"] == 2 and "copied_pct" in res["diversity"]


def test_faithfulness_deletion_test_in_metrics_and_table(data, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert _evaluate("--model", str(tiny_checkpoint), "--data", str(data / "captions_test.json"), "--no-java",
                     "--beam", "1", "--max-len", "6", "--faithfulness", "--faithfulness-images", "2",
                     "--out", str(out)) == 0
    res = json.loads((out / "metrics_test.json").read_text())
    fa = res["faithfulness"]
    assert (fa["images"], fa["k"], fa["cells"]) == (2, 1, 4)  # 2x2 grid: k = max(1, round(0.4))
    assert fa["words"] > 0 and 0 < fa["p_original"] < 1
    assert set(fa["drop"]) == {"attended", "random", "least"}
    assert all(-1 <= v <= 1 for v in fa["drop"].values())
    assert set(fa["ratio"]) == {"attended_random", "attended_least"}
    assert res["images"] == 3  # the caption metrics still cover the whole split
    table = capsys.readouterr().out
    assert "deletion test" in table and "att/rand" in table

    assert _evaluate("--model", str(tiny_checkpoint), "--data", str(data / "captions_test.json"), "--no-java",
                     "--beam", "1", "--max-len", "4", "--faithfulness", "--deletion-cells", "3", "--limit", "1",
                     "--out", str(out)) == 0
    assert json.loads((out / "metrics_test.json").read_text())["faithfulness"]["k"] == 3


@pytest.mark.parametrize("extra, message", [
    (["--predictions", "PREDS", "--faithfulness"], "--faithfulness"),
    (["--model", "CKPT", "--deletion-cells", "2"], "add --faithfulness"),
    (["--model", "CKPT", "--faithfulness", "--faithfulness-images", "0"], "at least 1"),
    (["--model", "CKPT", "--faithfulness", "--deletion-cells", "5"], "between 1 and the 4 attention cells"),
])
def test_faithfulness_bad_options_are_one_line_errors(data, tiny_checkpoint, tmp_path, capsys, extra, message):
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps([{"image_id": i, "caption": "a red circle"} for i in _test_ids(data)]))
    args = [{"PREDS": str(preds), "CKPT": str(tiny_checkpoint)}.get(a, a) for a in extra]
    assert _evaluate("--data", str(data / "captions_test.json"), "--no-java", *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("captioner: error: ") and message in err
    assert len(err.strip().splitlines()) == 1
