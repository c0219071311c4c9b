"""`captioner serve` through its HTTP API: the JSON contract, bad uploads, and staying up afterwards."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import socket
import struct
import threading
import urllib.request
import zlib
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

import captioner

pytest.importorskip("starlette", reason="the web server needs starlette (pip install -r requirements.txt)")
pytest.importorskip("python_multipart", reason="the web server needs python-multipart")
from starlette.testclient import TestClient  # noqa: E402

from captioner.cli import main as cli  # noqa: E402
from captioner.web.server import (CaptionService, create_app, is_loopback, load_models,  # noqa: E402
                              render_overlays, running_server)
from captioner.heatmaps import attention_scale  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "demo"
PHOTO = DEMO / "astronaut.jpg"
SCHEMA = json.loads((Path(captioner.__file__).parent / "schema" / "caption.schema.json").read_text())


@pytest.fixture(scope="module")
def models(tiny_checkpoint, tiny_hard_checkpoint):
    soft = load_models(str(tiny_checkpoint), compare=str(tiny_hard_checkpoint))
    assert list(soft) == ["tiny-soft", "tiny-hard"]
    return soft


@pytest.fixture(scope="module")
def client(models):
    with TestClient(create_app(CaptionService(models, demo_dir=DEMO))) as c:
        yield c


def post_file(client, name: str, data: bytes, ctype: str = "image/jpeg", **fields):
    return client.post("/api/caption", files={"image": (name, data, ctype)}, data=fields)


def assert_good(client) -> dict:
    """The server still answers a normal request correctly."""
    r = post_file(client, "astronaut.jpg", PHOTO.read_bytes(), beam="1")
    assert r.status_code == 200, r.text
    entry = r.json()
    assert entry["caption"] and entry["image"] == "astronaut.jpg"
    return entry


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` but holds almost no data (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# ------------------------------------------------------------------------------------ the contract


def test_json_endpoint_returns_what_caption_json_prints(client, tiny_checkpoint, capsys):
    assert cli.main(["caption", str(PHOTO), "--model", str(tiny_checkpoint), "--json", "--beam", "2"]) == 0
    [expected] = json.loads(capsys.readouterr().out)
    r = post_file(client, "astronaut.jpg", PHOTO.read_bytes(), beam="2", model="tiny-soft")
    assert r.status_code == 200
    got = r.json()
    assert got["image"] == "astronaut.jpg"
    assert {k: v for k, v in got.items() if k != "image"} == {k: v for k, v in expected.items() if k != "image"}


def test_raw_image_body_and_demo_name_give_the_same_caption(client):
    by_form = assert_good(client)
    raw = client.post("/api/caption?beam=1", content=PHOTO.read_bytes(), headers={"content-type": "image/jpeg"})
    demo = client.post("/api/caption", data={"demo": "astronaut.jpg", "beam": "1"})
    assert raw.status_code == demo.status_code == 200
    assert raw.json()["caption"] == demo.json()["caption"] == by_form["caption"]


def test_beam_and_max_len_reach_the_decoder(client, models):
    direct = models["tiny-soft"].caption(PHOTO, beam=1, max_len=4)
    r = post_file(client, "a.jpg", PHOTO.read_bytes(), beam="1", max_len="4")
    assert r.status_code == 200
    assert r.json()["caption"] == direct.caption and len(r.json()["words"]) <= 4


def test_hard_model_reports_a_location_per_word(client):
    r = post_file(client, "a.jpg", PHOTO.read_bytes(), model="tiny-hard", max_len="5")
    assert r.status_code == 200 and r.json()["model"] == "tiny-hard"
    for w in r.json()["words"]:
        assert len(w["attention"]) == 2 and all(0 <= v < 2 for v in w["location"])


def decode(uri: str) -> Image.Image:
    assert uri.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB")


def test_overlays_are_one_heatmap_per_word_over_the_upright_photo(client):
    r = post_file(client, "a.jpg", PHOTO.read_bytes(), overlays="1", max_len="5")
    entry = r.json()
    assert len(entry["overlays"]) == len(entry["words"]) > 0
    jsonschema.validate([entry], SCHEMA)  # the added fields are documented, and only optional ones
    grids = [np.array(w["attention"]) for w in entry["words"]]
    for w, g in zip(entry["words"], grids):
        assert w["peak"] == pytest.approx(g.max(), abs=1e-5)
        assert w["image_weight"] == pytest.approx(g.sum(), abs=1e-3)
    assert entry["attention_max"] == pytest.approx(max(g.max() for g in grids), abs=1e-5)
    assert entry["show_image_weight"] is False  # the tiny models have no sentinel: every row sums to 1

    thumb = decode(entry["thumbnail"])
    assert max(thumb.size) == 384
    for uri in entry["overlays"]:
        heat = decode(uri)
        assert heat.size == thumb.size and heat.tobytes() != thumb.tobytes()
    plain = post_file(client, "a.jpg", PHOTO.read_bytes(), max_len="5").json()
    assert "overlays" not in plain and "thumbnail" not in plain  # the plain contract stays plain
    assert "attention_max" not in plain and all("peak" not in w for w in plain["words"])


def test_page_overlays_share_the_captions_colour_scale():
    """A nearly flat map beside a one-hot one: on one scale the flat one barely tints the photo."""
    grid = 7
    rows, cols = np.mgrid[0:grid, 0:grid]
    flat = 1.0 + 0.1 * (cols - rows) / (grid - 1)  # ±10% ramp, peak at the top-right cell
    flat /= flat.sum()
    hot = np.zeros((grid, grid))
    hot[5, 1] = 0.6  # a sentinel model: 40% of this word's attention went to the sentinel
    photo = Image.new("RGB", (210, 140), (128, 128, 128))
    entry = {"words": [{"word": "there", "attention": flat.tolist()}, {"word": "dog", "attention": hot.tolist()}]}
    extra = render_overlays(photo, entry)
    plain = np.asarray(decode(extra["thumbnail"]), dtype=float)
    h, w = plain.shape[:2]

    def change(uri: str, cell: tuple[int, int]) -> float:
        r, c = cell
        patch = (slice(r * h // grid + 2, (r + 1) * h // grid - 2), slice(c * w // grid + 2, (c + 1) * w // grid - 2))
        return float(np.abs(np.asarray(decode(uri), dtype=float)[patch] - plain[patch]).mean())

    assert change(extra["overlays"][1], (5, 1)) > 40
    assert change(extra["overlays"][0], (0, 6)) < 0.35 * change(extra["overlays"][1], (5, 1))
    assert extra["attention_max"] == pytest.approx(0.6)
    assert [x["peak"] for x in extra["words"]] == pytest.approx([flat.max(), 0.6], abs=1e-5)  # 5 decimals
    assert [x["image_weight"] for x in extra["words"]] == pytest.approx([1.0, 0.6])
    assert extra["show_image_weight"] is True
    assert entry["words"][0].keys() == {"word", "attention"}  # the caller's entry is left as it was
    sc = attention_scale([flat, hot])
    assert sc.label(1) == "peak 60% · img 60%"  # what the page's figures() writes from these numbers


def test_page_writes_the_same_figures_as_the_files():
    """The page's pct()/figures() (run by Node here; by Chromium in test_browser) match visualize's."""
    import shutil
    import subprocess

    from captioner.web.page import _JS
    from captioner.heatmaps import percent

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    helpers = re.search(r"^function pct\(.*?^}\n^function figures\(.*?^}\n", _JS, flags=re.M | re.S).group(0)
    xs = [0.0, 0.0004, 0.00049, 0.0049, 0.005, 0.0051, 0.0149, 0.015, 0.025, 0.125, 0.315, 0.5, 0.995, 1.0]
    xs += list(np.random.default_rng(0).random(200) ** 3)
    maps = [np.full((2, 2), 0.25), np.array([[0.5, 0.1], [0.0, 0.0]])]  # the second: a sentinel took 40%
    sc = attention_scale(maps)
    words = [{"peak": p, "image_weight": w} for p, w in zip(sc.peaks, sc.image_weights)]
    script = helpers + (f"const xs = {json.dumps(xs)}, words = {json.dumps(words)};\n"
                        f"const entry = {{show_image_weight: {json.dumps(sc.show_image_weight)}}};\n"
                        "console.log(JSON.stringify([xs.map(pct), words.map((w) => figures(entry, w))]));")
    out = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=60, check=True).stdout
    pct, labels = json.loads(out)
    assert pct == [percent(x) for x in xs]
    assert labels == [sc.label(i) for i in range(2)] == ["peak 25% · img 100%", "peak 50% · img 60%"]


def test_page_script_parses():
    import shutil
    import subprocess

    from captioner.web.page import _JS

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    subprocess.run([node, "--check", "-"], input=_JS, capture_output=True, text=True, timeout=60, check=True)


def test_page_is_self_contained_and_locked_down(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "http://" not in page and "https://" not in page  # no CDN scripts, fonts or styles
    assert not re.search(r"<(script|link|img)[^>]+src=\"//", page)
    csp = r.headers["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
    assert "default-src 'none'" in csp and f'<script nonce="{nonce}">' in page
    assert r.headers["x-content-type-options"] == "nosniff"
    config = json.loads(re.search(r'<script id="config" type="application/json">(.*?)</script>', page).group(1))
    assert [m["name"] for m in config["models"]] == ["tiny-soft", "tiny-hard"]
    assert config["compare"] == "tiny-hard" and "astronaut.jpg" in config["demos"]


def test_demo_images_are_served_by_name_only(client):
    assert "astronaut.jpg" in client.get("/api/demos").json()["demos"]
    r = client.get("/demo/astronaut.jpg")
    assert r.status_code == 200 and r.content == PHOTO.read_bytes()
    assert client.get("/demo/README.md").status_code == 404
    assert client.get("/demo/..%2F..%2Fpyproject.toml").status_code == 404


# ------------------------------------------------------------------------------------------ bad input

TRUNCATED = PHOTO.read_bytes()[:6000]
BAD = {
    "empty upload": (dict(files={"image": ("empty.jpg", b"", "image/jpeg")}), 400, "empty upload"),
    "text file": (dict(files={"image": ("notes.txt", b"just some words\n", "text/plain")}), 415, "not an image"),
    "text file named .jpg": (dict(files={"image": ("x.jpg", b"GIF? no.", "image/jpeg")}), 415, "not an image"),
    "decompression bomb": (dict(files={"image": ("bomb.png", png_header(20000, 20000), "image/png")}), 413,
                           "bomb.png"),
    "truncated jpeg": (dict(files={"image": ("cut.jpg", TRUNCATED, "image/jpeg")}), 400, "truncated"),
    "json body": (dict(json={"image": "astronaut.jpg"}), 415, "content type"),
    "raw text body": (dict(content=b"hello", headers={"content-type": "text/plain"}), 415, "content type"),
    "raw body not an image": (dict(content=b"hello", headers={"content-type": "image/png"}), 415, "not an image"),
    "image as text field": (dict(data={"image": "/etc/passwd"}), 400, "must be a file"),
    "no image at all": (dict(data={"beam": "3"}), 400, "no image"),
    "unknown model": (dict(data={"demo": "astronaut.jpg", "model": "gpt"}), 400, "unknown model 'gpt'"),
    "beam zero": (dict(data={"demo": "astronaut.jpg", "beam": "0"}), 400, "beam must be"),
    "beam not a number": (dict(data={"demo": "astronaut.jpg", "beam": "many"}), 400, "beam must be"),
    "unknown demo": (dict(data={"demo": "../README.md"}), 404, "no demo image"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_request_is_a_clear_4xx_and_the_server_keeps_serving(client, case):
    kwargs, status, phrase = BAD[case]
    r = client.post("/api/caption", **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert phrase in body["error"] and "\n" not in body["error"]
    assert "captioner-upload" not in body["error"]  # the server's temp file is never named, only the upload
    assert_good(client)


def test_uploads_over_the_limit_are_refused_before_decoding(models):
    small = DEMO / "synth-2.jpg"
    service = CaptionService(models, demo_dir=DEMO, max_upload_bytes=20_000)
    assert small.stat().st_size < 20_000 < PHOTO.stat().st_size
    with TestClient(create_app(service)) as c:
        r = post_file(c, "astronaut.jpg", PHOTO.read_bytes())
        assert r.status_code == 413 and "over the limit of" in r.json()["error"]
        r = c.post("/api/caption", content=PHOTO.read_bytes(), headers={"content-type": "image/jpeg"})
        assert r.status_code == 413
        assert post_file(c, "small.jpg", small.read_bytes()).status_code == 200


def test_a_crash_inside_the_model_is_a_500_and_the_next_request_works(client, models, monkeypatch):
    model = models["tiny-soft"]
    original = model.caption_images
    calls = []

    def broken_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("simulated failure")
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "caption_images", broken_once)
    r = post_file(client, "a.jpg", PHOTO.read_bytes())
    assert r.status_code == 500 and "simulated failure" in r.json()["error"]
    assert_good(client)
    assert len(calls) == 2


def test_wrong_method_and_unknown_page_are_json_errors_too(client):
    r = client.get("/api/caption")
    assert r.status_code == 405 and "POST" in r.headers["allow"]
    assert r.json()["error"] == "Method Not Allowed (GET /api/caption)"
    r = client.post("/api/nothing-here")
    assert r.status_code == 404 and r.json()["error"].startswith("Not Found")


def test_foreign_host_header_is_refused_when_guarded(models):
    with TestClient(create_app(CaptionService(models, demo_dir=None), allowed_hosts=["127.0.0.1"])) as c:
        assert c.get("/healthz").status_code == 400  # TestClient says Host: testserver
        assert c.get("/healthz", headers={"host": "127.0.0.1:8000"}).status_code == 200


# --------------------------------------------------------------------------------- a real server


def test_a_stalled_upload_does_not_block_other_clients(models):
    app = create_app(CaptionService(models, demo_dir=DEMO))
    with running_server(app) as url:
        host, port = url.removeprefix("http://").split(":")
        stalled = socket.create_connection((host, int(port)), timeout=10)
        try:  # promise 100 kB, send 10 bytes, then go quiet
            stalled.sendall(b"POST /api/caption HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                            b"Content-Length: 100000\r\n\r\n0123456789")
            results: list[int] = []

            def one() -> None:
                req = urllib.request.Request(f"{url}/api/caption?beam=1&max_len=5", data=PHOTO.read_bytes(),
                                             headers={"Content-Type": "image/jpeg"})
                with urllib.request.urlopen(req, timeout=60) as resp:
                    results.append(resp.status)

            threads = [threading.Thread(target=one) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(90)
            assert results == [200] * 4
        finally:
            stalled.close()


def test_a_client_that_leaves_mid_upload_is_no_server_error(models, caplog):
    caplog.set_level(logging.INFO, logger="captioner.web")
    with running_server(create_app(CaptionService(models, demo_dir=DEMO))) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(b"POST /api/caption HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                         b"Content-Length: 100000\r\n\r\n0123456789")
            sock.shutdown(socket.SHUT_WR)  # and gone: the body never comes
            while sock.recv(65536):
                pass
        req = urllib.request.Request(f"{url}/api/caption?beam=1&max_len=5", data=PHOTO.read_bytes(),
                                     headers={"Content-Type": "image/jpeg"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert resp.status == 200
    records = [r for r in caplog.records if r.name == "captioner.web"]
    assert any("client went away" in r.getMessage() for r in records)
    assert not [r for r in records if r.levelno >= logging.ERROR]


# ----------------------------------------------------------------------------------- CLI and setup


def test_load_models_keeps_two_checkpoints_with_one_name_apart(tiny_checkpoint):
    assert list(load_models(str(tiny_checkpoint), compare=str(tiny_checkpoint))) == ["tiny-soft", "tiny-soft#2"]
    assert list(load_models(str(tiny_checkpoint), compare="none")) == ["tiny-soft"]


def test_serve_reports_a_bad_model_or_a_taken_port_as_one_line(tmp_path, capsys):
    missing = tmp_path / "nope.safetensors"
    assert cli.main(["serve", "--model", str(missing), "--port", "0"]) == cli.EXIT_ERROR
    assert "unknown model" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert cli.main(["serve", "--model", str(missing), "--port", str(port)]) == cli.EXIT_ERROR
        err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and err.count("\n") == 1


def test_default_host_is_loopback_only():
    args = cli.build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.port == 8000 and args.max_upload_mb == 10
    assert is_loopback(args.host) and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
