"""The synthetic dataset: real COCO files, tight boxes, captions naming the shapes, deterministic, atomic."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter
from pycocotools.coco import COCO

from captioner.cli import synth as synth_cli
from captioner.data import synth
from captioner.data.synth import dataset as synth_dataset
from captioner.errors import ConfigError, DataError

RELATIONS = ("left of", "right of", "above", "over", "below", "under", "beneath", "next to", "beside")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "ds"
    synth.generate(out, 30, seed=3, workers=1)
    return out


def _load(out: Path, kind: str, split: str) -> dict:
    return json.loads((out / f"{kind}_{split}.json").read_text())


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text)


def test_public_vocabulary_is_big_enough() -> None:
    assert len(SHAPES := synth.SHAPES) >= 3 and len(set(SHAPES)) == len(SHAPES)
    assert len(set(synth.COLOURS)) >= 5 and len(set(synth.SIZES)) >= 2
    assert set(synth.COLOUR_RGB) == set(synth.COLOURS)


def test_pycocotools_loads_every_file_and_images_exist(dataset: Path) -> None:
    total = 0
    for split in synth.SPLITS:
        caps = COCO(str(dataset / f"captions_{split}.json"))
        inst = COCO(str(dataset / f"instances_{split}.json"))
        assert sorted(caps.getImgIds()) == sorted(inst.getImgIds())
        assert len(caps.getImgIds()) >= 1
        assert [c["name"] for c in inst.loadCats(inst.getCatIds())] == list(synth.SHAPES)
        for img in caps.loadImgs(caps.getImgIds()):
            with Image.open(dataset / "images" / img["file_name"]) as im:
                assert im.size == (img["width"], img["height"]) == (224, 224)
        total += len(caps.getImgIds())
    assert total == 30


def test_every_split_gets_images_and_ids_are_unique(tmp_path: Path) -> None:
    summary = synth.generate(tmp_path / "ds", 3, seed=0)
    assert summary["splits"] == {"train": 1, "val": 1, "test": 1}
    ids = [i["id"] for s in synth.SPLITS for i in _load(tmp_path / "ds", "captions", s)["images"]]
    assert len(ids) == len(set(ids)) == 3


def test_boxes_lie_inside_images_and_do_not_overlap(dataset: Path) -> None:
    for split in synth.SPLITS:
        doc = _load(dataset, "instances", split)
        by_image: dict[int, list[list[int]]] = {}
        for ann in doc["annotations"]:
            x, y, w, h = ann["bbox"]
            assert w > 0 and h > 0 and ann["area"] > 0 and ann["iscrowd"] == 0
            assert 0 <= x and 0 <= y and x + w <= 224 and y + h <= 224
            assert ann["area"] <= w * h
            assert ann["attributes"]["colour"] in synth.COLOURS and ann["attributes"]["size"] in synth.SIZES
            by_image.setdefault(ann["image_id"], []).append(ann["bbox"])
        assert set(by_image) == {img["id"] for img in doc["images"]}, "every image has at least one object"
        for boxes in by_image.values():
            assert 1 <= len(boxes) <= 3
            for i, (x0, y0, w0, h0) in enumerate(boxes):
                for x1, y1, w1, h1 in boxes[i + 1:]:
                    assert x0 + w0 <= x1 or x1 + w1 <= x0 or y0 + h0 <= y1 or y1 + h1 <= y0


def test_box_tightly_bounds_the_drawn_shape_in_its_colour(dataset: Path) -> None:
    """Inside the polygon the pixels have the annotated colour; just outside the box they do not."""
    palette = {c: np.array(rgb, dtype=float) for c, rgb in synth.COLOUR_RGB.items()}
    checked = 0
    for split in synth.SPLITS:
        doc = _load(dataset, "instances", split)
        files = {img["id"]: img["file_name"] for img in doc["images"]}
        for ann in doc["annotations"]:
            pix = np.asarray(Image.open(dataset / "images" / files[ann["image_id"]]).convert("RGB"), dtype=float)
            poly = np.array(ann["segmentation"][0]).reshape(-1, 2)
            x, y, w, h = ann["bbox"]
            assert np.allclose(poly.min(0), [x, y], atol=1.5) and np.allclose(poly.max(0), [x + w, y + h], atol=1.5)
            mask = Image.new("L", (224, 224), 0)
            ImageDraw.Draw(mask).polygon([tuple(p) for p in poly.tolist()], fill=255)
            core = np.asarray(mask.filter(ImageFilter.MinFilter(5))) > 0  # away from antialiased edges
            assert core.any()
            inside = pix[core].mean(0)
            nearest = min(palette, key=lambda c: np.linalg.norm(inside - palette[c]))
            assert nearest == ann["attributes"]["colour"]
            spread = np.median(np.linalg.norm(pix[core] - inside, axis=1))  # noise within the shape
            ring = np.zeros((224, 224), bool)  # a 2-pixel frame just outside the box: background only
            ring[max(y - 2, 0):y + h + 2, max(x - 2, 0):x + w + 2] = True
            ring[y:y + h, x:x + w] = False
            if ring.any():
                outside = np.median(np.linalg.norm(pix[ring] - inside, axis=1))
                assert outside > max(4 * spread, 30), (ann, outside, spread)
            checked += 1
    assert checked >= 30


def test_five_different_captions_naming_every_object(dataset: Path) -> None:
    relational = 0
    for split in synth.SPLITS:
        caps = _load(dataset, "captions", split)
        inst = _load(dataset, "instances", split)
        names = {c["id"]: c["name"] for c in inst["categories"]}
        for img in caps["images"]:
            texts = [a["caption"] for a in caps["annotations"] if a["image_id"] == img["id"]]
            assert len(texts) == 5 and len(set(texts)) == 5
            objs = [a for a in inst["annotations"] if a["image_id"] == img["id"]]
            for text in texts:
                words = _words(text)
                for obj in objs:
                    shape = names[obj["category_id"]]
                    assert shape in words or shape + "s" in words, (shape, text)
                    assert obj["attributes"]["colour"] in words, text
            if len(objs) > 1:
                assert any(rel in text for text in texts for rel in RELATIONS), texts
                relational += 1
    assert relational > 0


def test_same_seed_same_bytes_and_workers_do_not_matter(tmp_path: Path) -> None:
    synth.generate(tmp_path / "a", 40, seed=7, workers=1)
    synth.generate(tmp_path / "b", 40, seed=7, workers=2)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 40 + 6 and a == b


def test_different_seed_different_data(tmp_path: Path) -> None:
    synth.generate(tmp_path / "a", 10, seed=1)
    synth.generate(tmp_path / "b", 10, seed=2)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys()
    assert a["captions_train.json"] != b["captions_train.json"]
    assert all(a[k] != b[k] for k in a if k.endswith(".jpg"))


def test_refuses_non_empty_output_and_leaves_it_alone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        synth.generate(out, 5)
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError):
        synth.generate(tmp_path / "file", 5)


def test_accepts_an_existing_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    synth.generate(tmp_path / "out", 4)
    assert (tmp_path / "out" / "instances_train.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failure_midway_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = synth_dataset.render

    def flaky(style: synth.Style, seed: int, index: int, size: int):
        if index == 5:
            raise RuntimeError("boom")
        return real(style, seed, index, size)

    monkeypatch.setattr(synth_dataset, "render", flaky)
    with pytest.raises(RuntimeError):
        synth.generate(tmp_path / "out", 10, workers=1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs", [
    {"n_images": 0}, {"n_images": -3}, {"n_images": 2.5}, {"n_images": True},
    {"seed": -1}, {"seed": "0"}, {"image_size": 16}, {"image_size": 100000},
    {"split_fractions": (0.5, 0.3, 0.3)}, {"split_fractions": (0.8, 0.2)}, {"split_fractions": (-0.1, 0.6, 0.5)},
    {"split_fractions": (0.0, 0.5, 0.5)}, {"split_fractions": (float("nan"), 0.5, 0.5)},
    {"workers": 0}, {"workers": 1.5},
])
def test_bad_arguments_raise_config_error(tmp_path: Path, kwargs: dict) -> None:
    args = {"n_images": 5, **kwargs}
    with pytest.raises(ConfigError):
        synth.generate(tmp_path / "out", **args)
    assert list(tmp_path.iterdir()) == []


def test_cli_run_writes_and_summarises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    synth_cli.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "ds"), "--images", "6", "--seed", "4", "--size", "96"])
    assert synth_cli.run(args) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "6 images" in line
    assert _load(tmp_path / "ds", "captions", "train")["images"][0]["width"] == 96
    bad = parser.parse_args(["--out", str(tmp_path / "x"), "--splits", "0.8,zero,0.1"])
    with pytest.raises(ConfigError):
        synth_cli.run(bad)


def test_zero_fraction_gives_an_empty_but_loadable_split(tmp_path: Path) -> None:
    summary = synth.generate(tmp_path / "ds", 5, split_fractions=(1.0, 0.0, 0.0))
    assert summary["splits"] == {"train": 5, "val": 0, "test": 0}
    assert COCO(str(tmp_path / "ds" / "instances_val.json")).getImgIds() == []


def test_unwritable_destination_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="cannot write"):
        synth.generate(tmp_path / "file" / "ds", 3)

