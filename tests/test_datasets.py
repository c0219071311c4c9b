"""Dataset loaders: every format gives the same records, and every bad input is a one-line DataError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from captioner.data.coco import load_coco, load_karpathy
from captioner.data.flickr8k import load_flickr8k
from captioner.data.formats import load_records
from captioner.data.records import Record, check_images_exist
from captioner.errors import ConfigError, DataError

# image id -> (split, file name, captions). Ids 9/10/42 check numeric (not string) ordering.
IMAGES = {
    42: ("train", "COCO_train2014_000000000042.png", ["A red square.", "a square, red and small\n"]),
    9: ("train", "COCO_train2014_000000000009.png", ["Two circles on grass.", "  circles  "]),
    10: ("train", "COCO_train2014_000000000010.png", ["A blue triangle."]),
    7: ("val", "COCO_val2014_000000000007.png", ["A green dog's ball."]),
    8: ("restval", "COCO_val2014_000000000008.png", ["A yellow star."]),
}
FOLDER = {"train": "train2014", "val": "val2014", "restval": "val2014"}


def _png(path: Path, colour: tuple[int, int, int] = (200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), colour).save(path)


def _write(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    """root/{train2014,val2014}/*.png, root/annotations/captions_*.json, root/dataset_coco.json."""
    root = tmp_path / "coco"
    for image_id, (split, name, _) in IMAGES.items():
        _png(root / FOLDER[split] / name)
    ann_id = 0
    for coco_split in ("train", "val"):
        ids = [i for i, (s, _, _) in IMAGES.items() if FOLDER[s] == FOLDER[coco_split]]
        images = [{"id": i, "file_name": IMAGES[i][1], "width": 8, "height": 6} for i in ids]
        annotations = []
        for i in ids:
            for caption in IMAGES[i][2]:
                ann_id += 1
                annotations.append({"id": ann_id, "image_id": i, "caption": caption})
        _write(root / "annotations" / f"captions_{coco_split}2014.json", {"images": images, "annotations": annotations})
    karpathy = []
    for n, (image_id, (split, name, captions)) in enumerate(IMAGES.items()):
        sentences = [{"raw": c.strip(), "tokens": c.lower().split(), "sentid": n} for c in captions]
        karpathy.append(
            {"filepath": FOLDER[split], "filename": name, "split": split, "cocoid": image_id, "imgid": n, "sentences": sentences}
        )
    _write(root / "dataset_coco.json", {"images": karpathy, "dataset": "coco"})
    return root


def _one_line_error(exc_info: pytest.ExceptionInfo, *needles: str) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


# ----------------------------------------------------------------------------------- COCO / Karpathy
def test_coco_and_karpathy_give_the_same_records(coco: Path) -> None:
    from_coco = load_coco(coco / "annotations" / "captions_train2014.json", coco / "train2014", "train")
    from_karpathy = load_karpathy(coco / "dataset_coco.json", coco, ["train"])
    assert from_coco == from_karpathy
    assert [r.image_id for r in from_coco] == ["9", "10", "42"]  # numeric order, not "10" < "42" < "9"
    first = from_coco[0]
    assert first.captions == ("Two circles on grass.", "circles")
    assert Path(first.image_path) == coco / "train2014" / IMAGES[9][1]
    assert all(r.split == "train" for r in from_coco)


def test_load_records_guesses_split_and_images_folder(coco: Path) -> None:
    records = load_records("coco", coco / "annotations" / "captions_val2014.json")
    assert [(r.image_id, r.split) for r in records] == [("7", "val"), ("8", "val")]
    assert all(Path(r.image_path).is_file() for r in records)
    karpathy = load_records("KARPATHY", coco / "dataset_coco.json", split="train,restval")
    assert [(r.image_id, r.split) for r in karpathy] == [("8", "restval"), ("9", "train"), ("10", "train"), ("42", "train")]
    assert len(load_records("karpathy", coco / "dataset_coco.json")) == len(IMAGES)


def test_coco_merges_duplicate_images_and_interleaved_annotations(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "a.png")
    _png(tmp_path / "images" / "b.png")
    captions = _write(
        tmp_path / "captions_train.json",
        {
            "images": [{"id": 2, "file_name": "b.png"}, {"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
            "annotations": [
                {"image_id": 2, "caption": "b one"},
                {"image_id": 1, "caption": "a one"},
                {"image_id": 2, "caption": "b two"},
            ],
        },
    )
    records = load_coco(captions, tmp_path / "images", "train")
    assert records == [
        Record(str(tmp_path / "images" / "a.png"), ("a one",), "train", "1"),
        Record(str(tmp_path / "images" / "b.png"), ("b one", "b two"), "train", "2"),
    ]


def test_karpathy_without_cocoid_uses_filename_and_tokens(tmp_path: Path) -> None:
    _png(tmp_path / "imgs" / "x.jpg")
    split_json = _write(
        tmp_path / "dataset_flickr8k.json",
        {"images": [{"filename": "x.jpg", "imgid": 0, "split": "val", "sentences": [{"tokens": ["a", "dog"]}, {"raw": "A cat."}]}]},
    )
    (record,) = load_karpathy(split_json, tmp_path / "imgs", "dev")
    assert record == Record(str(tmp_path / "imgs" / "x.jpg"), ("a dog", "A cat."), "val", "x.jpg")


# ----------------------------------------------------------------------------------- Flickr8k
FLICKR = {  # name -> captions; "d.jpg" is in no split list and must be dropped
    "a.jpg": ["A dog runs .", "A brown dog , running on grass .", "Dog"],
    "b.jpg": ["Two kids play .", "Kids"],
    "c.jpg": ["A man on a bike ."],
    "d.jpg": ["Not in any list ."],
}
LISTS = {"Flickr_8k.trainImages.txt": ["b.jpg", "a.jpg"], "Flickr_8k.devImages.txt": ["c.jpg"], "Flickr_8k.testImages.txt": []}


def _flickr8k(root: Path, image_dir: str = "images") -> Path:
    for name in FLICKR:
        _png(root / image_dir / name)
    token_lines = [f"{name}#{k}\t{c}" for name, caps in FLICKR.items() for k, c in enumerate(caps)]
    (root / "Flickr8k.token.txt").write_text("\n".join(token_lines) + "\n", encoding="utf-8")
    with open(root / "captions.txt", "w", encoding="utf-8", newline="") as f:
        import csv

        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        for name, caps in FLICKR.items():
            for c in caps:
                writer.writerow([name, c])
    for list_name, names in LISTS.items():
        (root / list_name).write_text("".join(n + "\n" for n in names), encoding="utf-8")
    return root


@pytest.mark.parametrize("image_dir", ["images", "Flicker8k_Dataset", "Images"])
def test_flickr8k_token_file_and_csv_agree(tmp_path: Path, image_dir: str) -> None:
    root = _flickr8k(tmp_path, image_dir)
    assert '"A brown dog , running on grass ."' in (root / "captions.txt").read_text()  # the comma case is exercised
    from_root = load_flickr8k(root)
    from_token = load_flickr8k(root / "Flickr8k.token.txt")
    from_csv = load_flickr8k(root / "captions.txt")
    assert from_root == from_token == from_csv
    assert [(r.image_id, r.split, len(r.captions)) for r in from_csv] == [("a.jpg", "train", 3), ("b.jpg", "train", 2), ("c.jpg", "val", 1)]
    assert from_csv[0].captions == tuple(FLICKR["a.jpg"])
    assert Path(from_csv[0].image_path) == root / image_dir / "a.jpg"


def test_flickr8k_split_selection_maps_dev_to_val(tmp_path: Path) -> None:
    root = _flickr8k(tmp_path)
    assert [r.image_id for r in load_flickr8k(root, splits="dev")] == ["c.jpg"]
    assert [r.image_id for r in load_records("flickr8k", root, split=["val"])] == ["c.jpg"]
    assert [r.image_id for r in load_flickr8k(root, splits=["train"])] == ["a.jpg", "b.jpg"]
    with pytest.raises(ConfigError):
        load_flickr8k(root, splits=["restval"])


def test_flickr8k_unquoted_comma_in_csv_is_kept(tmp_path: Path) -> None:
    root = _flickr8k(tmp_path)
    (root / "captions.txt").write_text("image,caption\nc.jpg,A man , on a bike .\n", encoding="utf-8")
    (record,) = load_flickr8k(root / "captions.txt", splits="val")
    assert record.captions == ("A man , on a bike .",)


# ----------------------------------------------------------------------------------- bad input
def test_missing_files_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    for load in (
        lambda: load_coco(missing, tmp_path, "train"),
        lambda: load_karpathy(missing, tmp_path),
        lambda: load_flickr8k(missing),
    ):
        with pytest.raises(DataError) as e:
            load()
        _one_line_error(e, str(missing), "no such file")


def test_malformed_json_reports_position(tmp_path: Path) -> None:
    bad = tmp_path / "captions_train.json"
    bad.write_text('{"images": [\n  {"id": 1,}\n]}', encoding="utf-8")
    for load in (lambda: load_coco(bad, tmp_path, "train"), lambda: load_karpathy(bad, tmp_path)):
        with pytest.raises(DataError) as e:
            load()
        _one_line_error(e, str(bad), "not valid JSON (line 2 col")


@pytest.mark.parametrize(
    "content, needle",
    [
        ({"images": []}, "missing key 'annotations'"),
        ({"annotations": []}, "missing key 'images'"),
        ([1, 2], "not a COCO captions file"),
        ({"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1, "bbox": [0, 0, 1, 1]}]}, "no 'caption'"),
        ({"images": [{"id": 1}], "annotations": []}, "'file_name'"),
        ({"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 5, "caption": "x"}]}, "image id 5"),
    ],
)
def test_coco_wrong_shape(tmp_path: Path, content: object, needle: str) -> None:
    path = _write(tmp_path / "captions_train.json", content)
    with pytest.raises(DataError) as e:
        load_coco(path, tmp_path, "train")
    _one_line_error(e, str(path), needle)


@pytest.mark.parametrize(
    "content, needle",
    [
        ({"dataset": "coco"}, "missing key 'images'"),
        ({"images": [{"filename": "a.png", "split": "train"}]}, "no 'sentences'"),
        ({"images": [{"filename": "a.png", "split": "train", "sentences": [{"sentid": 1}]}]}, "neither 'raw'"),
    ],
)
def test_karpathy_wrong_shape(tmp_path: Path, content: object, needle: str) -> None:
    path = _write(tmp_path / "dataset_coco.json", content)
    with pytest.raises(DataError) as e:
        load_karpathy(path, tmp_path)
    _one_line_error(e, str(path), "not a Karpathy split file", needle)


def test_empty_split_is_an_error(coco: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        load_karpathy(coco / "dataset_coco.json", coco, ["test"])
    _one_line_error(e, "no images in split 'test' of", str(coco / "dataset_coco.json"))
    empty = _write(tmp_path / "captions_val.json", {"images": [], "annotations": []})
    with pytest.raises(DataError) as e:
        load_coco(empty, tmp_path, "val")
    _one_line_error(e, f"no images in split 'val' of {empty}")


def test_missing_images_error_or_skip(coco: Path) -> None:
    captions = coco / "annotations" / "captions_train2014.json"
    (coco / "train2014" / IMAGES[10][1]).unlink()
    with pytest.raises(DataError) as e:
        load_coco(captions, coco / "train2014", "train")
    _one_line_error(e, f"1 of 3 images listed in {captions} are missing from {coco / 'train2014'}", IMAGES[10][1], "--skip-missing")
    with pytest.warns(UserWarning, match="1 of 3 images"):
        kept = load_coco(captions, coco / "train2014", "train", skip_missing=True)
    assert [r.image_id for r in kept] == ["9", "42"]
    with pytest.warns(UserWarning), pytest.raises(DataError) as e:
        load_coco(captions, coco / "val2014", "train", skip_missing=True)  # wrong folder: all missing
    _one_line_error(e, "all 3 are missing")


def test_check_images_exist_lists_first_three(tmp_path: Path) -> None:
    _png(tmp_path / "ok.png")
    records = [Record(str(tmp_path / n), ("c",), "train", n) for n in ["ok.png", "m1.png", "m2.png", "m3.png", "m4.png"]]
    with pytest.raises(DataError) as e:
        check_images_exist(records, False, source="list.json", images_dir=tmp_path)
    msg = _one_line_error(e, "4 of 5 images listed in list.json", "m1.png, m2.png, m3.png, ...")
    assert "m4.png" not in msg
    with pytest.warns(UserWarning, match="4 of 5"):
        assert check_images_exist(records, True) == records[:1]


def test_flickr8k_bad_inputs(tmp_path: Path) -> None:
    root = _flickr8k(tmp_path)
    token = root / "Flickr8k.token.txt"
    token.write_text("a.jpg#0 A dog without a tab\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_flickr8k(token)
    _one_line_error(e, f"{token} line 1", "<TAB>")

    (root / "Flickr_8k.testImages.txt").unlink()
    with pytest.raises(DataError) as e:
        load_flickr8k(root / "captions.txt", splits="test")
    _one_line_error(e, "Flickr_8k.testImages.txt: no such file")

    for name in LISTS:
        (root / name).unlink(missing_ok=True)
    with pytest.raises(DataError) as e:
        load_flickr8k(root / "captions.txt")
    _one_line_error(e, "no Flickr8k split lists", "Flickr_8k.trainImages.txt")

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as e:
        load_flickr8k(empty)
    _one_line_error(e, str(empty), "no Flickr8k caption file")


def test_unknown_format_is_a_config_error(coco: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_records("voc", coco / "dataset_coco.json")
    _one_line_error(e, "'voc'", "coco, karpathy, flickr8k")
    with pytest.raises(ConfigError):
        load_records("coco", coco / "dataset_coco.json")  # split not in the name
