"""Erasing boxes and `captioner explain`: the API, the CLI and Python give the caption of a hand-painted copy."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from PIL import Image, ImageDraw, ImageOps

import captioner
from captioner.cli.main import main as cli_main
from captioner.data.erase import MAX_BOXES, MEAN_RGB, cell_boxes, clip_box, erase, parse_boxes
from captioner.errors import ConfigError
from captioner.model.search import DecodeOptions

pytest.importorskip("starlette", reason="the web server needs starlette (pip install -r requirements.txt)")
from starlette.testclient import TestClient  # noqa: E402

from captioner.web.server import CaptionService, create_app, load_models  # noqa: E402

PHOTO = Path(__file__).resolve().parent.parent / "demo" / "astronaut.jpg"
BOXES = [[100, 50, 200, 250], [0, 0, 10, 10], [500, 500, 40, 40]]  # the last is clipped to 12 x 12


def painted(path: Path, boxes) -> Image.Image:
    """The photo with the boxes painted over by hand, as a user would in an image editor."""
    image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for x, y, w, h in boxes:
        draw.rectangle((x, y, min(x + w, image.width) - 1, min(y + h, image.height) - 1), fill=MEAN_RGB)
    return image


def test_boxes_are_clipped_painted_and_reported():
    image = Image.new("RGB", (40, 30), (255, 255, 255))
    out, applied = erase(image, [(-5, -5, 10, 10), (35.5, 20, 100, 100), (50, 50, 5, 5), (10, 10, 0, 4)])
    assert applied == [[0, 0, 5, 5], [35, 20, 5, 10]]  # outside the photo or empty: left out
    assert out.getpixel((4, 4)) == MEAN_RGB and out.getpixel((5, 5)) == (255, 255, 255)
    assert out.getpixel((39, 29)) == MEAN_RGB and out.getpixel((34, 29)) == (255, 255, 255)
    assert image.getpixel((0, 0)) == (255, 255, 255)  # the original is untouched
    assert clip_box((3.2, 1.7, 2.0, 2.0), 10, 10) == (3, 1, 3, 3)
    assert cell_boxes([0, 3], 2, 100, 60) == [(0.0, 0.0, 50.0, 30.0), (50.0, 30.0, 50.0, 30.0)]


@pytest.mark.parametrize("bad, why", [
    ("not json", "JSON"), ("{}", "list"), ("[[1, 2, 3]]", "four numbers"), ("[[1, 2, -3, 4]]", "negative"),
    ('[["a", 2, 3, 4]]', "four numbers"), ("[[1, 2, 3, true]]", "four numbers"),
    (json.dumps([[0, 0, 1, 1]] * (MAX_BOXES + 1)), "at most 64"),
])
def test_bad_boxes_are_one_line_errors(bad, why):
    with pytest.raises(ConfigError, match=why) as err:
        parse_boxes(bad)
    assert "\n" not in str(err.value)


def test_cli_python_and_api_give_the_caption_of_a_hand_painted_copy(tiny_checkpoint, tmp_path, capsys):
    copy = tmp_path / "painted.png"
    painted(PHOTO, BOXES).save(copy)
    model = captioner.load_model(str(tiny_checkpoint))
    by_hand = model.caption(copy, beam=2).caption
    in_python = model.caption(PHOTO, beam=2, erase=BOXES)
    assert in_python.caption == by_hand and in_python.erased == [[100, 50, 200, 250], [0, 0, 10, 10], [500, 500, 12, 12]]
    args = ["caption", str(PHOTO), "--model", str(tiny_checkpoint), "--beam", "2", "--json"]
    assert cli_main(args + [f"--erase={','.join(map(str, b))}" for b in BOXES]) == 0
    entry = json.loads(capsys.readouterr().out)[0]
    assert entry["caption"] == by_hand and entry["erased"] == in_python.erased
    service = CaptionService(load_models(str(tiny_checkpoint), compare="none"), demo_dir=None)
    with TestClient(create_app(service)) as client:
        r = client.post("/api/caption", files={"image": ("a.jpg", PHOTO.read_bytes(), "image/jpeg")},
                        data={"beam": "2", "erase": json.dumps(BOXES)})
        assert r.status_code == 200 and r.json()["caption"] == by_hand and r.json()["erased"] == in_python.erased
        for bad in ("[[1,2]]", "nope", json.dumps([[0, 0, 1, 1]] * 65), "[[0, 0, -1, 5]]"):
            r = client.post("/api/caption", files={"image": ("a.jpg", PHOTO.read_bytes(), "image/jpeg")},
                            data={"erase": bad})
            assert r.status_code == 400 and "\n" not in r.json()["error"], bad


def test_a_bad_erase_flag_is_one_line_and_nothing_runs(tiny_checkpoint, capsys):
    assert cli_main(["caption", str(PHOTO), "--model", str(tiny_checkpoint), "--erase", "1,2,3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "four numbers" in err


def test_explain_checks_every_content_word_against_random_cells(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "explain.html"
    assert cli_main(["explain", str(PHOTO), "--model", str(tiny_checkpoint), "--beam", "1", "--json",
                     "--html", str(out), "--cells", "1"]) == 0
    reports = json.loads(capsys.readouterr().out)
    jsonschema.validate(reports, json.loads((Path(captioner.__file__).parent / "schema" / "explain.schema.json").read_text()))
    report = reports[0]
    model = captioner.load_model(str(tiny_checkpoint))
    assert report["caption"] == model.caption(PHOTO, beam=1).caption and report["cells"] == 1
    from captioner.evaluation.deletion import is_content_word

    assert [w["word"] for w in report["words"]] == [w for w in report["caption"].split() if is_content_word(w)]
    for w in report["words"]:
        again = model.caption(PHOTO, beam=1, erase=w["attended"]["boxes"])
        assert again.caption == w["attended"]["caption"] and (w["word"] in again.words) == w["attended"]["survives"]
        assert len(w["random"]["cells"]) == 1
    assert report["summary"]["content_words"] == len(report["words"])
    assert out.read_text().count("<h3>") == len(report["words"])
    assert cli_main(["explain", str(PHOTO), "--model", str(tiny_checkpoint), "--beam", "1", "--json", "--cells", "1"]) == 0
    assert json.loads(capsys.readouterr().out)[0] == report  # seeded: the same report again


def test_overlays_report_the_upright_size_the_boxes_are_measured_in(tiny_checkpoint, tmp_path):
    """A photo stored sideways (EXIF orientation 6): width/height, the boxes and the thumbnail are all upright."""
    import base64
    import io

    stored = Image.new("RGB", (60, 40), (250, 250, 250))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view: upright it is 40 wide, 60 high
    buf = io.BytesIO()
    stored.save(buf, "JPEG", exif=exif, quality=95)
    service = CaptionService(load_models(str(tiny_checkpoint), compare="none"), demo_dir=None)
    with TestClient(create_app(service)) as client:
        r = client.post("/api/caption", files={"image": ("side.jpg", buf.getvalue(), "image/jpeg")},
                        data={"overlays": "1", "erase": json.dumps([[0, 50, 100, 100]]), "max_len": "3"})
    entry = r.json()
    assert r.status_code == 200 and (entry["width"], entry["height"]) == (40, 60)
    assert entry["erased"] == [[0, 50, 40, 10]]  # clipped to the upright frame
    thumb = Image.open(io.BytesIO(base64.b64decode(entry["thumbnail"].split(",", 1)[1]))).convert("RGB")
    assert thumb.size == (40, 60)  # the photo the model saw, erased: grey at the bottom only
    assert max(abs(a - b) for a, b in zip(thumb.getpixel((20, 57)), MEAN_RGB)) < 12
    assert min(thumb.getpixel((20, 5))) > 230
    plain = service.caption(Image.new("RGB", (5, 7)), "x", "tiny-soft", DecodeOptions(max_len=3))
    assert "width" not in plain  # only with overlays
