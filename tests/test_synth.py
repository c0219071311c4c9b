"""The synthetic dataset: real COCO files, tight boxes, captions naming the shapes, deterministic, atomic."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
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


def _box_fit(ann: dict, pix: np.ndarray, palette: dict[str, np.ndarray]) -> tuple[str, float, float]:
    """(nearest palette colour inside the shape, median distance from it just outside the box, its spread
    inside); also checks that the box is the polygon's extent."""
    poly = np.array(ann["segmentation"][0]).reshape(-1, 2)
    x, y, w, h = ann["bbox"]
    assert np.allclose(poly.min(0), [x, y], atol=1.5) and np.allclose(poly.max(0), [x + w, y + h], atol=1.5)
    mask = Image.new("L", (224, 224), 0)
    ImageDraw.Draw(mask).polygon([tuple(p) for p in poly.tolist()], fill=255)
    core = np.asarray(mask.filter(ImageFilter.MinFilter(5))) > 0  # away from antialiased edges
    assert core.any()
    inside = pix[core].mean(0)
    nearest = min(palette, key=lambda c: np.linalg.norm(inside - palette[c]))
    spread = np.median(np.linalg.norm(pix[core] - inside, axis=1))  # noise within the shape
    ring = np.zeros((224, 224), bool)  # a 2-pixel frame just outside the box: background only
    ring[max(y - 2, 0):y + h + 2, max(x - 2, 0):x + w + 2] = True
    ring[y:y + h, x:x + w] = False
    outside = np.median(np.linalg.norm(pix[ring] - inside, axis=1)) if ring.any() else math.inf
    return nearest, float(outside), float(spread)


def test_box_tightly_bounds_the_drawn_shape_in_its_colour(dataset: Path) -> None:
    """Inside the polygon the pixels have the annotated colour; just outside the box they do not."""
    palette = {c: np.array(rgb, dtype=float) for c, rgb in synth.COLOUR_RGB.items()}
    checked = 0
    for split in synth.SPLITS:
        doc = _load(dataset, "instances", split)
        files = {img["id"]: img["file_name"] for img in doc["images"]}
        for ann in doc["annotations"]:
            pix = np.asarray(Image.open(dataset / "images" / files[ann["image_id"]]).convert("RGB"), dtype=float)
            nearest, outside, spread = _box_fit(ann, pix, palette)
            assert nearest == ann["attributes"]["colour"]
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


# ------------------------------------------------------------------------------------------ styles
NEW_STYLES = ("plain", "gradient", "noisy", "crowded", "dark")
COUNTED = re.compile(r"\b(two|three|four) (?:[a-z]+ )?([a-z]+)s\b")  # "two blue stars", "three circles"
NUMBER = {"two": 2, "three": 3, "four": 4}
N_STYLED = 12


@pytest.fixture(scope="module")
def styled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small dataset of every style, all with seed 5, and one of the 'all' mix with the same seed."""
    root = tmp_path_factory.mktemp("styles")
    out = {}
    for name in (*synth.STYLES, "all"):
        out[name] = root / name
        synth.generate(out[name], N_STYLED, seed=5, style=name, workers=1)
    return out


def _images(out: Path) -> list[tuple[dict, list[dict], list[str], np.ndarray]]:
    """(image entry, instances, captions, pixels) of every image of every split."""
    rows = []
    for split in synth.SPLITS:
        caps, inst = _load(out, "captions", split), _load(out, "instances", split)
        for img in caps["images"]:
            objs = [a for a in inst["annotations"] if a["image_id"] == img["id"]]
            texts = [a["caption"] for a in caps["annotations"] if a["image_id"] == img["id"]]
            with Image.open(out / "images" / img["file_name"]) as im:
                rows.append((img, objs, texts, np.asarray(im.convert("RGB"), dtype=float)))
    return rows


def _background(objs: list[dict], size: int = 224, pad: int = 3) -> np.ndarray:
    keep = np.ones((size, size), bool)
    for o in objs:
        x, y, w, h = o["bbox"]
        keep[max(y - pad, 0):y + h + pad, max(x - pad, 0):x + w + pad] = False
    return keep


def test_textured_default_is_byte_identical_to_the_original_generator(tmp_path: Path) -> None:
    """Shipped models and recorded commands use the original files: pinned from the generator before styles."""
    synth.generate(tmp_path / "default", 40, seed=0)
    synth.generate(tmp_path / "named", 40, seed=0, style="textured")
    assert _files(tmp_path / "default") == _files(tmp_path / "named")
    pinned = {"captions_train.json": "ba64f640928b7f7a847c43edc338549b",
              "captions_val.json": "0a8335c47d557112d52d7279953846ab",
              "captions_test.json": "497a74df82b48de61a4f1a7bce46478a",
              "instances_train.json": "478afb9ffd2fd6cef555ae9cb3f39993",
              "instances_val.json": "b97ee23da711a010f3866e425f112e07",
              "instances_test.json": "443ae97b1935a162b967e7bb880d0952"}
    assert {k: hashlib.md5((tmp_path / "default" / k).read_bytes()).hexdigest() for k in pinned} == pinned
    means = {1: (94.597, 75.148, 89.983), 2: (152.919, 161.276, 157.155), 3: (61.855, 70.438, 62.835)}
    for i, mean in means.items():  # pixels, loosely: a JPEG decoder may round differently
        with Image.open(tmp_path / "default" / "images" / "train" / f"{i:08d}.jpg") as im:
            assert np.allclose(np.asarray(im, dtype=float).mean((0, 1)), mean, atol=0.05)


def test_registry_lists_the_styles_and_resolves_names() -> None:
    assert next(iter(synth.STYLES)) == synth.DEFAULT_STYLE == "textured"
    assert set(NEW_STYLES) <= set(synth.STYLES)
    assert synth.resolve_styles("all") == tuple(synth.STYLES)
    assert synth.resolve_styles(" plain , dark") == ("plain", "dark")
    assert synth.resolve_styles(["crowded", "plain"]) == ("crowded", "plain")
    for style in synth.STYLES.values():
        synth.check_style(style)
        assert style.description and "\n" not in style.description
    with pytest.raises(ValueError, match="unknown"):
        synth.check_style(synth.Style("broken", "x", backgrounds=("velvet",), colours=("red",), grammar=("short",)))
    with pytest.raises(ValueError, match="distinct"):
        synth.check_style(synth.Style("few", "x", backgrounds=("plain",), colours=("red",), grammar=("short",),
                                      shapes=("circle",), objects=(1, 2)))


@pytest.mark.parametrize("name", NEW_STYLES)
def test_each_style_is_deterministic(tmp_path: Path, name: str) -> None:
    synth.generate(tmp_path / "a", 8, seed=2, style=name)
    synth.generate(tmp_path / "b", 8, seed=2, style=name)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 8 + 6 and a == b
    info = _load(tmp_path / "a", "captions", "train")
    assert info["info"]["style"] == name and {i["style"] for i in info["images"]} == {name}


def test_styles_differ_in_images_and_captions(styled: dict[str, Path]) -> None:
    files = {name: _files(styled[name]) for name in synth.STYLES}
    captions = {name: {t for _, _, texts, _ in _images(styled[name]) for t in texts} for name in synth.STYLES}
    names = list(synth.STYLES)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert all(files[a][k] != files[b][k] for k in files[a] if k.endswith(".jpg")), (a, b)
            assert len(captions[a] & captions[b]) <= 0.1 * len(captions[a]), (a, b, captions[a] & captions[b])


def test_each_style_looks_as_described(styled: dict[str, Path]) -> None:
    """Background brightness and texture, object counts and sizes: what each style promises."""
    for name in synth.STYLES:
        style = synth.STYLES[name]
        sizes = set()
        for img, objs, texts, pix in _images(styled[name]):
            lum = pix.mean(2)
            bg = _background(objs)
            step = np.abs(np.diff(lum, axis=1))[bg[:, 1:] & bg[:, :-1]].mean()  # high-frequency texture
            level = lum[bg].mean()
            assert style.objects[0] <= len(objs) <= style.objects[1], (name, len(objs))
            sizes |= {o["attributes"]["size"] for o in objs}
            if name == "plain":
                spread = np.percentile(lum[bg], 99) - np.percentile(lum[bg], 1)  # JPEG rings round the shapes
                assert level > 200 and spread <= 3, (level, spread)
            elif name == "dark":
                assert level < 70, level
            elif name == "noisy":
                assert step > 14, step
            elif name == "gradient":
                assert step < 5 and (level < 90 or level > 160), (step, level)
        assert sizes == set(synth.SIZES), (name, sizes)


def test_a_mix_is_deterministic_and_draws_each_image_from_its_style(tmp_path: Path, styled: dict[str, Path]) -> None:
    synth.generate(tmp_path / "a", 40, seed=9, style="plain,dark,crowded", workers=1)
    summary = synth.generate(tmp_path / "b", 40, seed=9, style=["plain", "dark", "crowded"], workers=2)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert set(summary["styles"]) == {"plain", "dark", "crowded"} and min(summary["styles"].values()) > 0
    assert sum(summary["styles"].values()) == 40
    # the 'all' mix: each image is byte for byte the image of the same index in its own style's dataset
    mixed = _images(styled["all"])
    assert len({img["style"] for img, *_ in mixed}) > 2
    for img, *_ in mixed:
        name = img["file_name"]
        assert ((styled["all"] / "images" / name).read_bytes()
                == (styled[img["style"]] / "images" / name).read_bytes()), img


def test_every_caption_names_every_shape_and_counts_right(styled: dict[str, Path]) -> None:
    counted = 0
    for name in synth.STYLES:
        for img, objs, texts, _ in _images(styled[name]):
            assert len(texts) == 5 and len(set(texts)) == 5, texts
            shapes = [synth.SHAPES[o["category_id"] - 1] for o in objs]
            for text in texts:
                words = _words(text)
                for shape in shapes:
                    assert shape in words or shape + "s" in words, (name, shape, text)
                for number, shape in COUNTED.findall(text):
                    if shape in synth.SHAPES:
                        assert shapes.count(shape) == NUMBER[number], (text, shapes)
                        counted += 1
    assert counted > 0


def test_boxes_are_tight_apart_and_coloured_as_annotated_in_every_style(styled: dict[str, Path]) -> None:
    for name in NEW_STYLES:
        style = synth.STYLES[name]
        palette = {c: np.array(synth.COLOUR_TABLE[c], dtype=float) for c in style.colours}
        for _, objs, _, pix in _images(styled[name]):
            boxes = [o["bbox"] for o in objs]
            for i, (x0, y0, w0, h0) in enumerate(boxes):
                assert 0 <= x0 and 0 <= y0 and x0 + w0 <= 224 and y0 + h0 <= 224
                for x1, y1, w1, h1 in boxes[i + 1:]:
                    assert x0 + w0 < x1 or x1 + w1 < x0 or y0 + h0 < y1 or y1 + h1 < y0, "boxes keep a gap"
            for o in objs:
                assert 18 <= max(o["bbox"][2:]) <= 100, (name, o["bbox"])  # realistic at 224 px
                assert o["attributes"]["colour"] in style.colours and o["attributes"]["size"] in synth.SIZES
                nearest, outside, spread = _box_fit(o, pix, palette)
                assert nearest == o["attributes"]["colour"], (name, o)
                assert outside > max(2 * spread, 40), (name, o, outside, spread)


def test_instances_list_every_shape_as_a_category(styled: dict[str, Path]) -> None:
    for name in NEW_STYLES:
        for split in synth.SPLITS:
            cats = COCO(str(styled[name] / f"instances_{split}.json")).loadCats(list(range(1, 6)))
            assert [c["name"] for c in cats] == list(synth.SHAPES)


@pytest.mark.parametrize("style", ["shiny", "plain,,dark", "", [], ["plain", 3], "textured,glossy"])
def test_bad_style_is_a_one_line_config_error_listing_the_styles(tmp_path: Path, style) -> None:
    with pytest.raises(ConfigError) as err:
        synth.generate(tmp_path / "out", 3, style=style)
    message = str(err.value)
    assert "\n" not in message and all(name in message for name in synth.STYLES)
    assert list(tmp_path.iterdir()) == []


def test_cli_style_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from captioner.cli.main import main

    assert main(["synth", "--out", str(tmp_path / "bad"), "--images", "3", "--style", "shiny"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("captioner: error: synth: unknown style 'shiny'") and err.count("\n") == 1
    assert "plain" in err and not (tmp_path / "bad").exists()
    assert main(["synth", "--out", str(tmp_path / "ds"), "--images", "6", "--style", "plain,dark"]) == 0
    assert "styles: plain" in capsys.readouterr().out
    assert _load(tmp_path / "ds", "captions", "train")["info"]["style"] == "plain,dark"
    with pytest.raises(SystemExit) as done:
        main(["synth", "--list-styles"])
    assert done.value.code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(synth.STYLES)
    assert all(len(line.split()) > 3 for line in lines)
