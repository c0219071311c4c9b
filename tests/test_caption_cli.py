"""`captioner caption` end to end on a tiny random model: outputs, the --json contract, and every bad input."""

from __future__ import annotations

import io
import json
import struct
import sys
import zlib
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

import captioner
from captioner.data import images as images_module
from captioner.cli.main import main
from captioner.model.search import DecodeOptions
from captioner.model.caption_model import load_model


SCHEMA = json.loads((Path(captioner.__file__).parent / "schema" / "caption.schema.json").read_text())
GRID = 2  # tiny_config


def png_with_declared_size(path: Path, width: int, height: int) -> Path:
    """A real 1x1 PNG whose header claims ``width x height`` (CRC fixed): a decompression bomb in 70 bytes."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def _photo(path: Path, size=(64, 48), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["caption", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def _plain_lines(out: str) -> dict[str, str]:
    pairs = [line.split("\t") for line in out.splitlines()]
    assert all(len(p) == 2 and p[1].strip() for p in pairs), out
    return dict(pairs)


def _assert_failures(err: str, failed: int, total: int) -> list[str]:
    """One `captioner: error:` line per failure, then the count: nothing else on stderr."""
    lines = err.splitlines()
    assert len(lines) == failed + 1, err
    assert all(line.startswith("captioner: error: ") for line in lines[:-1]), err
    assert lines[-1] == f"captioner: {failed} of {total} inputs failed"
    return lines[:-1]


@pytest.fixture
def photos(tmp_path) -> list[Path]:
    d = tmp_path / "photos"
    d.mkdir()
    return [_photo(d / f"p{i}.jpg", seed=i) for i in range(3)]


def _png_ok(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


# ---------------------------------------------------------------- outputs


def test_plain_output_one_tab_line_per_image(tiny_checkpoint, photos, capsys):
    rc, out, err = _run(capsys, *map(str, photos), "--model", str(tiny_checkpoint), "--beam", "2", "--max-len", "5")
    assert rc == 0 and err == ""
    captions = _plain_lines(out)
    assert list(captions) == [str(p) for p in photos]
    assert all(1 <= len(c.split()) <= 5 for c in captions.values())


def test_batch_size_does_not_change_captions(tiny_checkpoint, photos, capsys):
    argv = [*map(str, photos), "--model", str(tiny_checkpoint), "--max-len", "6"]
    _, one_batch, _ = _run(capsys, *argv)
    _, batches_of_one, _ = _run(capsys, *argv, "--batch-size", "1")
    assert one_batch == batches_of_one


@pytest.mark.parametrize("hard", [False, True])
def test_json_matches_the_schema(tiny_checkpoint, tiny_hard_checkpoint, photos, capsys, hard):
    ckpt = tiny_hard_checkpoint if hard else tiny_checkpoint
    rc, out, err = _run(capsys, *map(str, photos), "--model", str(ckpt), "--json", "--max-len", "6")
    assert rc == 0 and err == ""
    entries = json.loads(out)
    jsonschema.validate(entries, SCHEMA)
    assert [e["image"] for e in entries] == [str(p) for p in photos]
    for e in entries:
        assert e["model"] == ckpt.stem
        assert e["caption"] == " ".join(w["word"] for w in e["words"])
        for w in e["words"]:
            grid = np.array(w["attention"])
            assert grid.shape == (GRID, GRID)
            assert grid.sum() == pytest.approx(1.0, abs=1e-3)
            assert ("location" in w) == hard
            if hard:  # argmax decoding: the chosen cell is the attention peak (row, col order)
                r, c = w["location"]
                assert 0 <= r < GRID and 0 <= c < GRID
                assert grid[r, c] == pytest.approx(grid.max(), abs=1e-4)


def test_schema_rejects_malformed_entries():
    """The schema can fail: otherwise validating against it would prove nothing."""
    good = {"image": "a.jpg", "caption": "a dog", "score": -1.0, "model": "m",
            "words": [{"word": "a", "attention": [[0.5, 0.5]]}, {"word": "dog", "attention": [[1, 0]]}]}
    jsonschema.validate([good, {"image": "b.jpg", "error": "broken", "model": "m"}], SCHEMA)
    bad = [
        {**good, "words": [{"word": "a", "attention": [0.5, 0.5]}]},  # 1-D attention
        {**good, "words": [{"word": "a", "attention": [[0.5, 0.5]], "location": [1.5, 0]}]},
        {k: v for k, v in good.items() if k != "caption"},
        {"image": "b.jpg", "model": "m"},
        {**good, "error": "both"},
    ]
    for entry in bad:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate([entry], SCHEMA)


def test_heatmap_for_one_image(tiny_checkpoint, photos, tmp_path, capsys):
    out_png = tmp_path / "out" / "map.png"
    rc, _, _ = _run(capsys, str(photos[0]), "--model", str(tiny_checkpoint), "--heatmap", str(out_png))
    assert rc == 0
    w, h = _png_ok(out_png)
    assert w > 0 and h > 0
    assert [p.name for p in out_png.parent.iterdir()] == ["map.png"]  # no temp files left behind


def test_heatmap_folder_one_png_per_image_even_with_clashing_names(tiny_checkpoint, tmp_path, capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    imgs = [_photo(src / "a.jpg"), _photo(src / "a.png", seed=1), _photo(src / "sub" / "a.jpg", seed=2),
            _photo(src / "b.jpg", seed=3)]
    maps, gifs = tmp_path / "maps", tmp_path / "gifs"
    rc, out, _ = _run(capsys, str(src), "--model", str(tiny_checkpoint), "--heatmap", str(maps), "--gif", str(gifs),
                      "--max-len", "4")
    assert rc == 0 and len(_plain_lines(out)) == len(imgs)
    pngs = sorted(maps.iterdir())
    assert len(pngs) == len(imgs) and all(p.suffix == ".png" for p in pngs)
    assert (maps / "b.png").exists()  # a unique name keeps its plain stem
    for p in pngs:
        _png_ok(p)
    assert len(list(gifs.glob("*.gif"))) == len(imgs)


def test_gif_and_html_written(tiny_checkpoint, tiny_hard_checkpoint, photos, tmp_path, capsys):
    gif, html = tmp_path / "one.gif", tmp_path / "report.html"
    rc, _, _ = _run(capsys, str(photos[0]), "--model", str(tiny_hard_checkpoint), "--gif", str(gif),
                    "--html", str(html), "--max-len", "3")
    assert rc == 0
    with Image.open(gif) as im:
        assert im.format == "GIF" and getattr(im, "n_frames", 1) >= 1
    text = html.read_text(encoding="utf-8")
    assert text.lstrip().lower().startswith("<!doctype html") and photos[0].name in text


def test_paths_from_stdin(tiny_checkpoint, photos, monkeypatch, capsys):
    listing = f"{photos[0]}\n\n   {photos[1]}  \n{photos[2]}\n"
    for argv in ([], ["-"]):
        monkeypatch.setattr(sys, "stdin", io.StringIO(listing))
        rc, out, err = _run(capsys, *argv, "--model", str(tiny_checkpoint), "--max-len", "4")
        assert rc == 0 and err == ""
        assert list(_plain_lines(out)) == [str(p) for p in photos]


def test_empty_stdin_is_an_error(tiny_checkpoint, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n  \n"))
    rc, out, err = _run(capsys, "--model", str(tiny_checkpoint))
    assert rc == 2 and out == "" and len(err.splitlines()) == 1 and "no images given" in err


# ---------------------------------------------------------------- same seed, same caption


def test_same_seed_same_sampled_caption(tiny_checkpoint, photos, capsys):
    argv = [str(photos[0]), "--model", str(tiny_checkpoint), "--sample", "--seed", "3"]
    first, second = _run(capsys, *argv), _run(capsys, *argv)
    assert first[0] == 0 and first[1] == second[1]


def test_different_seeds_can_differ(tiny_checkpoint, photos):
    model = load_model(str(tiny_checkpoint))
    img = Image.open(photos[0]).convert("RGB")
    sampled = {s: model.caption_images([img], DecodeOptions(sample=True, seed=s))[0].caption for s in range(6)}
    assert len(set(sampled.values())) > 1
    again = model.caption_images([img], DecodeOptions(sample=True, seed=4))[0].caption
    assert again == sampled[4]


# ---------------------------------------------------------------- bad inputs in a batch


def test_every_bad_input_is_reported_and_good_ones_still_captioned(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    d = tmp_path / "mixed"
    d.mkdir()
    good = [_photo(d / "good1.jpg"), _photo(d / "good2.png", seed=1)]
    Image.new("RGB", (1, 1), (9, 9, 9)).save(d / "tiny.png")
    Image.new("RGB", (10000, 200), (0, 0, 200)).save(d / "wide.png")
    good += [d / "tiny.png", d / "wide.png"]
    (d / "zero.jpg").write_bytes(b"")
    data = (d / "good1.jpg").read_bytes()
    (d / "cut.jpg").write_bytes(data[: len(data) // 2])
    (d / "text.jpg").write_text("not an image")
    png_with_declared_size(d / "bomb.png", 100_000, 100_000)
    Image.new("RGB", (2001, 1000)).save(d / "over.png")  # just over the lowered pixel limit below
    monkeypatch.setattr(images_module, "MAX_PIXELS", 10000 * 200)  # wide.png is exactly at the limit: accepted
    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / "x.txt").write_text("x")
    bad = [d / "zero.jpg", d / "cut.jpg", d / "text.jpg", d / "bomb.png", d / "over.png",
           tmp_path / "missing.jpg", tmp_path / "no_images"]
    argv = [str(p) for p in good + bad] + ["--model", str(tiny_checkpoint), "--max-len", "4", "--batch-size", "3"]

    rc, out, err = _run(capsys, *argv)
    assert rc == 1
    assert set(_plain_lines(out)) == {str(p) for p in good}
    errors = _assert_failures(err, len(bad), len(good) + len(bad))
    for p in bad:
        assert sum(str(p) in line for line in errors) == 1, (p, errors)
    by_name = {p.name: next(line for line in errors if str(p) in line).replace(str(p), "<path>") for p in bad}
    assert "empty" in by_name["zero.jpg"]
    assert "truncated" in by_name["cut.jpg"]
    assert "not an image" in by_name["text.jpg"]
    assert "bomb" in by_name["bomb.png"]
    assert "limit" in by_name["over.png"]
    assert "no such file" in by_name["missing.jpg"]
    assert "no images" in by_name["no_images"]

    rc, out, err = _run(capsys, *argv, "--json")
    assert rc == 1
    entries = json.loads(out)
    jsonschema.validate(entries, SCHEMA)
    assert {e["image"] for e in entries if "caption" in e} == {str(p) for p in good}
    assert {e["image"] for e in entries if "error" in e} == {str(p) for p in bad}
    _assert_failures(err, len(bad), len(good) + len(bad))


def test_odd_modes_are_captioned(tiny_checkpoint, tmp_path, capsys):
    ramp = np.tile(np.linspace(0, 255, 48), (40, 1)).astype(np.uint8)
    files = {
        "gray.png": Image.fromarray(ramp),
        "cmyk.jpg": Image.new("CMYK", (48, 40), (10, 200, 30, 0)),
        "rgba.png": Image.new("RGBA", (48, 40), (0, 0, 255, 100)),
        "depth16.png": Image.fromarray(ramp.astype(np.uint16) * 250),
        "palette.png": Image.fromarray(ramp).convert("RGB").quantize(16),
        "palette.gif": Image.fromarray(ramp).convert("P"),
    }
    for name, img in files.items():
        img.save(tmp_path / name)
    with Image.open(tmp_path / "depth16.png") as im:
        assert im.mode == "I;16"
    rc, out, err = _run(capsys, *(str(tmp_path / n) for n in files), "--model", str(tiny_checkpoint), "--max-len", "3")
    assert rc == 0 and err == ""
    assert set(_plain_lines(out)) == {str(tmp_path / n) for n in files}


def test_all_inputs_bad(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "a.jpg").write_bytes(b"")
    rc, out, err = _run(capsys, str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg"), "--model", str(tiny_checkpoint))
    assert rc == 1 and out == ""
    _assert_failures(err, 2, 2)


# ---------------------------------------------------------------- bad flags: exit 2, one line


@pytest.mark.parametrize("flags,expect", [
    (["--batch-size", "0"], "--batch-size"),
    (["--beam", "0"], "--beam"),
    (["--max-len", "0"], "--max-len"),
    (["--no-repeat-ngram", "-1"], "--no-repeat-ngram"),
])
def test_bad_numbers(tiny_checkpoint, photos, capsys, flags, expect):
    rc, out, err = _run(capsys, str(photos[0]), "--model", str(tiny_checkpoint), *flags)
    assert rc == 2 and out == "" and len(err.splitlines()) == 1 and expect in err


def test_heatmap_file_name_for_many_images_is_refused(tiny_checkpoint, photos, tmp_path, capsys):
    rc, out, err = _run(capsys, *map(str, photos), "--model", str(tiny_checkpoint), "--heatmap",
                        str(tmp_path / "map.png"))
    assert rc == 2 and out == "" and len(err.splitlines()) == 1 and "folder" in err
    assert not (tmp_path / "map.png").exists()


def test_unwritable_output_is_one_line(tiny_checkpoint, photos, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc, _, err = _run(capsys, str(photos[0]), "--model", str(tiny_checkpoint), "--heatmap",
                      str(blocker / "map.png"))
    assert rc == 2 and len(err.splitlines()) == 1 and "cannot write" in err
    rc, _, err = _run(capsys, *map(str, photos), "--model", str(tiny_checkpoint), "--gif", str(blocker))
    assert rc == 2 and len(err.splitlines()) == 1 and "not a folder" in err
