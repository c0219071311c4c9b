"""The web page end to end in a real headless Chromium: upload, caption, hover a word, see its heatmap;
the explorer: erase what a word looked at, draw boxes by hand, click a point to see which words looked there.

Needs Debian's ``chromium`` package and the ``playwright`` Python package (its own browser download is
never used); skipped with the reason when either is missing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image, ImageOps

pytest.importorskip("starlette", reason="the web server needs starlette (pip install -r requirements.txt)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

from captioner.web.server import CaptionService, create_app, load_models, running_server  # noqa: E402
from captioner.heatmaps import attention_scale, percent  # noqa: E402
from captioner.cli.main import main as cli_main  # noqa: E402
from captioner.data.erase import cell_boxes, clip_box  # noqa: E402
from captioner.evaluation.deletion import default_cells  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "demo"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def served(tiny_checkpoint, tiny_hard_checkpoint):
    models = load_models(str(tiny_checkpoint), compare=str(tiny_hard_checkpoint))
    with running_server(create_app(CaptionService(models, demo_dir=DEMO))) as url:
        yield url, models


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def problems() -> list[str]:
    """Console errors, page errors and off-site requests seen by ``page``; must be empty at the end."""
    return []


@pytest.fixture
def page(browser, served, problems):
    url, _ = served
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    # Everything the page loads must come from our server or be inline: no CDN, no fonts from elsewhere.
    origin = urlparse(url).netloc
    pg.on("request", lambda r: None if urlparse(r.url).scheme in ("data", "blob") or urlparse(r.url).netloc == origin
          else problems.append(f"off-site request: {r.url}"))
    pg.goto(url + "/")
    yield pg
    context.close()
    assert problems == []


def test_upload_caption_hover_shows_heatmap(page, served, tmp_path):
    _, models = served
    page.select_option("#compare", "")  # one model first
    with page.expect_response(lambda r: r.url.endswith("/api/caption")) as answer:
        page.set_input_files("#file", str(DEMO / "astronaut.jpg"))
    entry = answer.value.json()
    panel = page.locator(".panel").first
    words = panel.locator(".caption .word")
    words.first.wait_for()
    shown = " ".join(words.all_inner_texts())
    assert shown == models["tiny-soft"].caption(DEMO / "astronaut.jpg", beam=3).caption
    assert page.locator(".panel").count() == 1

    heat = panel.locator("img.heat")
    figure = panel.locator(".figure")
    assert heat.is_hidden()
    before = figure.screenshot()
    words.nth(0).hover()
    assert heat.is_visible()
    first_src = heat.get_attribute("src")
    assert first_src.startswith("data:image/jpeg;base64,")
    assert "on" in words.nth(0).get_attribute("class")
    assert figure.screenshot() != before  # the heatmap really covers the photo
    assert '"' + words.nth(0).inner_text() + '"' in panel.locator(".lookat").inner_text()
    # The page writes the same figures as the PNG/GIF/HTML titles, from the same caption-wide scale.
    scale = attention_scale([w["attention"] for w in entry["words"]])
    assert panel.locator(".lookat").inner_text().endswith(" · " + scale.label(0))
    assert float(panel.get_attribute("data-vmax")) == pytest.approx(scale.vmax, abs=1e-5)
    assert scale.legend() in panel.locator(".meta").inner_text()
    xs = [0.0, 0.0004, 0.0049, 0.005, 0.0051, 0.0149, 0.015, 0.125, 0.315, 0.5, 0.999, 1.0, *scale.peaks]
    assert page.evaluate("(xs) => xs.map(pct)", xs) == [percent(x) for x in xs]
    page.screenshot(path=str(tmp_path / "hover.png"), full_page=True)
    page.screenshot(path="/tmp/server_screenshot.png", full_page=True)

    page.mouse.move(5, 5)  # leaving the word hides its map again
    assert heat.is_hidden()
    words.nth(1).click()  # a click pins the word's map
    page.mouse.move(5, 5)
    assert heat.is_visible() and "pinned" in words.nth(1).get_attribute("class")


def test_compare_soft_and_hard_side_by_side(page):
    assert page.locator("#compare").input_value() == "tiny-hard"  # preselected when two models are served
    page.select_option("#beam", "1")
    page.locator(".demos button[title='astronaut.jpg']").click()
    page.locator(".panel:nth-child(2) .caption .word").first.wait_for()
    panels = page.locator(".panel")
    assert panels.count() == 2
    assert [panels.nth(i).get_attribute("data-model") for i in range(2)] == ["tiny-soft", "tiny-hard"]
    hard = panels.nth(1)
    hard.locator(".caption .word").first.hover()
    assert hard.locator("img.heat").is_visible() and panels.nth(0).locator("img.heat").is_hidden()
    assert "hard attention cell" in hard.locator(".lookat").inner_text()
    page.screenshot(path="/tmp/server_screenshot_compare.png", full_page=True)


def test_non_image_upload_shows_a_clear_message(page, problems, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo\n")
    page.set_input_files("#file", str(notes))
    error = page.locator("#error")
    error.wait_for(state="visible")
    assert "notes.txt: not an image file" in error.inner_text()
    assert page.locator(".panel").count() == 0
    page.set_input_files("#file", str(DEMO / "coffee.jpg"))  # and the page still works afterwards
    page.locator(".panel .caption .word").first.wait_for()
    assert error.is_hidden()
    expected = "the server responded with a status of 415"  # the refused upload, logged by Chromium
    assert sum(expected in p for p in problems) == 2  # once per model: both panels asked
    problems[:] = [p for p in problems if expected not in p]


def test_one_model_and_no_demos_hide_what_does_not_apply(browser, served):
    _, models = served
    one = {"tiny-soft": models["tiny-soft"]}
    with running_server(create_app(CaptionService(one, demo_dir=None, max_upload_bytes=50_000))) as url:
        pg = browser.new_page()
        try:
            pg.goto(url + "/")
            assert pg.locator("#compare").is_hidden() and pg.locator("#demos").is_hidden()
            assert "up to 49 KB" in pg.locator("#drop").inner_text()
            pg.set_input_files("#file", str(DEMO / "astronaut.jpg"))  # 68 kB: refused before uploading
            pg.locator("#error").wait_for(state="visible")
            assert "over the upload limit of 49 KB" in pg.locator("#error").inner_text()
            pg.set_input_files("#file", str(DEMO / "synth-1.jpg"))  # 10 kB
            pg.locator(".panel .caption .word").first.wait_for()
            assert pg.locator(".panel").count() == 1 and pg.locator("#error").is_hidden()
        finally:
            pg.close()


# ------------------------------------------------------------------------------------------ the explorer

def caption_requests(page) -> list:
    """Every ``POST /api/caption`` the page makes from now on (read them after the answers are in)."""
    seen: list = []
    page.on("request", lambda r: seen.append(r) if r.url.endswith("/api/caption") else None)
    return seen


def form_fields(request) -> dict[str, str]:
    """The text fields of a multipart request (the photo itself left out)."""
    body = request.post_data_buffer
    return {k.decode(): v.decode() for k, v in re.findall(rb'name="([^"]+)"\r\n\r\n(.*?)\r\n--', body, re.S)}


def top_cells(grid, k: int) -> list[int]:
    """The deletion test's choice: the k largest weights, ties to the lower cell id."""
    return np.argsort(-np.asarray(grid, dtype=float).ravel(), kind="stable")[:k].tolist()


def cli_caption(checkpoint, photo: Path, beam: int, boxes, capsys) -> str:
    args = ["caption", str(photo), "--model", str(checkpoint), "--beam", str(beam), "--json"]
    assert cli_main(args + ["--erase=" + ",".join(repr(float(v)) for v in b) for b in boxes]) == 0
    return json.loads(capsys.readouterr().out)[0]["caption"]


def vanished(before: list[str], after: list[str]) -> list[bool]:
    """Per word of ``before``: does ``after`` have fewer of it (counted in order)?"""
    left = {w: after.count(w) for w in set(after)}
    flags = []
    for w in before:
        flags.append(left.get(w, 0) == 0)
        left[w] = left.get(w, 0) - 1
    return flags


def classes(locator, cls: str) -> list[bool]:
    return [cls in (c or "").split() for c in locator.evaluate_all("(bs) => bs.map((b) => b.className)")]


@pytest.fixture
def sideways(tmp_path) -> Path:
    """coffee.jpg (600 x 400) stored turned a quarter with EXIF orientation 6: upright it is 600 x 400 again."""
    upright = Image.open(DEMO / "coffee.jpg").convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.jpg"
    upright.transpose(Image.Transpose.ROTATE_90).save(path, quality=92, exif=exif)
    assert ImageOps.exif_transpose(Image.open(path)).size == (600, 400)
    return path


def test_erasing_a_words_region_recaptions_both_models_as_the_cli_does(page, served, sideways, tiny_checkpoint,
                                                                       tiny_hard_checkpoint, capsys):
    requests = caption_requests(page)
    page.select_option("#beam", "2")
    page.set_input_files("#file", str(sideways))
    panels = page.locator(".panel")
    panels.nth(1).locator(".caption .word").first.wait_for()
    entries = {e["model"]: e for e in (r.response().json() for r in requests)}
    soft = entries["tiny-soft"]
    assert (soft["width"], soft["height"]) == (600, 400)  # the upright photo's frame, not the stored one's

    word = 1
    panels.first.locator(".erase-word").nth(word).click()  # "erase what this word looked at"
    for i in range(2):
        panels.nth(i).locator(".result .caption.edited .word").first.wait_for()
    # Chromium keeps no body for a request with a file in it: the page puts the boxes it sent on the result.
    sent = [json.loads(panels.nth(i).locator(".result").get_attribute("data-erase")) for i in range(2)]
    assert sent[0] == sent[1] == json.loads(page.locator("#eraser").get_attribute("data-boxes"))
    grid = len(soft["words"][word]["attention"])
    expected = cell_boxes(top_cells(soft["words"][word]["attention"], default_cells(grid * grid)), grid, 600, 400)
    assert sent[0] == [list(b) for b in expected]  # the word's top-k cells, exactly as the deletion test cuts them
    answers = {e["model"]: e for e in (r.response().json() for r in requests[2:])}
    assert len(requests) == 4 and set(answers) == {"tiny-soft", "tiny-hard"}  # one erase, both models
    for a in answers.values():  # what the server applied: those boxes, clipped to whole pixels
        assert a["erased"] == [list(clip_box(b, 600, 400)) for b in sent[0]]

    for i, (name, ckpt) in enumerate([("tiny-soft", tiny_checkpoint), ("tiny-hard", tiny_hard_checkpoint)]):
        panel = panels.nth(i)
        new_words = panel.locator(".result .caption.edited .word")
        shown = " ".join(new_words.all_inner_texts())
        assert shown == cli_caption(ckpt, sideways, 2, sent[0], capsys) == answers[name]["caption"]
        assert panel.locator(".boxes .box").count() == len(sent[0])  # the erased region is grey on the photo
        before = [w["word"] for w in entries[name]["words"]]
        after = new_words.all_inner_texts()
        assert classes(panel.locator(".caption:not(.edited) .word"), "gone") == vanished(before, after)
        assert classes(new_words, "added") == vanished(after, before)
        if vanished(before, after) != [False] * len(before) or vanished(after, before) != [False] * len(after):
            assert "vanished" in panel.locator(".result .legend").inner_text()
        new_words.last.hover()  # the edited photo's own heatmaps
        assert panel.locator("img.heat").get_attribute("src") == answers[name]["overlays"][-1]
        assert panel.locator(".lookat").inner_text().startswith("edited photo: ")


def test_draw_undo_reset_and_caption_the_boxes(page, served, capsys, tiny_checkpoint):
    requests = caption_requests(page)
    page.select_option("#compare", "")
    page.locator(".demos button[title='chelsea.jpg']").click()  # 451 x 300
    panel = page.locator(".panel")
    panel.locator(".caption .word").first.wait_for()
    figure = panel.locator(".figure")
    boxes = panel.locator(".boxes .box")
    bb = figure.bounding_box()

    def drag(fx0, fy0, fx1, fy1):
        page.mouse.move(bb["x"] + fx0 * bb["width"], bb["y"] + fy0 * bb["height"])
        page.mouse.down()
        page.mouse.move(bb["x"] + fx1 * bb["width"], bb["y"] + fy1 * bb["height"], steps=5)
        page.mouse.up()

    def drawn():
        return [[int(v) for v in b.split(",")] for b in boxes.evaluate_all("(bs) => bs.map((b) => b.dataset.box)")]

    assert boxes.count() == 0
    drag(0.2, 0.1, 0.6, 0.5)
    assert boxes.count() == 1 and boxes.first.is_visible()
    x, y, w, h = drawn()[0]  # in the photo's own pixels: 451 x 300
    assert abs(x - 0.2 * 451) <= 3 and abs(y - 0.1 * 300) <= 3 and abs(w - 0.4 * 451) <= 4 and abs(h - 0.4 * 300) <= 4
    first = drawn()
    drag(0.9, 0.9, 0.7, 0.6)  # dragged up and left: the same box
    assert boxes.count() == 2
    page.click("#erase-undo")
    assert drawn() == first
    drag(0.5, 0.6, 0.95, 0.95)
    assert boxes.count() == 2
    grey = np.asarray(Image.open(__import__("io").BytesIO(figure.screenshot())).convert("RGB"), dtype=int)
    cx, cy = int(0.4 * grey.shape[1]), int(0.3 * grey.shape[0])  # inside the first box: the mean colour
    assert np.abs(grey[cy, cx] - [124, 116, 104]).max() <= 6

    page.click("#erase-run")
    panel.locator(".result .caption.edited .word").first.wait_for()
    sent = json.loads(form_fields(requests[-1])["erase"])
    assert sent == drawn() == json.loads(page.locator("#eraser").get_attribute("data-boxes"))
    shown = " ".join(panel.locator(".result .caption.edited .word").all_inner_texts())
    assert shown == cli_caption(tiny_checkpoint, DEMO / "chelsea.jpg", 3, sent, capsys)

    page.click("#erase-reset")
    assert boxes.count() == 0 and panel.locator(".result").is_hidden()
    assert not any(classes(panel.locator(".caption .word"), "gone"))
    assert page.locator("#erase-run").get_attribute("aria-disabled") == "true"
    page.locator("#erase-run").click(force=True)  # nothing to send: no request
    assert len(requests) == 2


def test_keyboard_erases_a_words_region_and_picks_cells(page, served):
    requests = caption_requests(page)
    page.select_option("#compare", "")
    page.locator(".demos button[title='astronaut.jpg']").click()
    panel = page.locator(".panel")
    panel.locator(".caption .word").first.wait_for()
    entry = requests[0].response().json()
    panel.locator(".caption .word").first.focus()
    page.keyboard.press("Tab")  # the next stop is the first word's erase action
    focused = page.evaluate("[document.activeElement.className, getComputedStyle(document.activeElement).outlineStyle]")
    assert focused[0] == "erase-word" and focused[1] != "none"  # a visible focus ring
    page.keyboard.press("Enter")
    panel.locator(".result .caption.edited .word").first.wait_for()
    grid = len(entry["words"][0]["attention"])
    assert json.loads(form_fields(requests[-1])["erase"]) == [
        list(b) for b in cell_boxes(top_cells(entry["words"][0]["attention"], 1), grid, 512, 512)]

    page.click("#erase-reset")
    figure = panel.locator(".figure")
    figure.focus()
    page.keyboard.press("ArrowDown")  # the first arrow picks the centre cell: row 2, column 2 of the 2 x 2 grid
    page.keyboard.press("ArrowLeft")  # now row 2, column 1
    assert panel.get_attribute("data-cell") == str(grid * (grid // 2))
    page.keyboard.press("Enter")  # greys that cell
    assert json.loads(page.locator("#eraser").get_attribute("data-boxes")) == [[0, 256, 256, 256]]
    page.keyboard.press("Backspace")  # undo
    assert page.locator("#eraser").get_attribute("data-boxes") == "[]"
    page.keyboard.press("Escape")
    assert panel.get_attribute("data-cell") == "" and panel.locator(".probe").count() == 0
    page.locator(".caption .word").nth(1).focus()
    page.keyboard.press("Space")  # a word is a button: Space pins its map
    assert "pinned" in page.locator(".caption .word").nth(1).get_attribute("class")


def test_clicking_a_point_lights_the_words_that_looked_there(page, served):
    requests = caption_requests(page)
    page.locator(".demos button[title='chelsea.jpg']").click()  # both models: soft and hard
    panels = page.locator(".panel")
    panels.nth(1).locator(".caption .word").first.wait_for()
    entries = {form_fields(r)["model"]: r.response().json() for r in requests}
    lit_anywhere = 0
    for fx, fy in [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75), (0.9, 0.1)]:
        bb = panels.first.locator(".figure").bounding_box()
        page.mouse.click(bb["x"] + fx * bb["width"], bb["y"] + fy * bb["height"])
        for i in range(2):  # one click on one photo asks both models
            panel = panels.nth(i)
            entry = entries[panel.get_attribute("data-model")]
            grid = len(entry["words"][0]["attention"])
            cell = int(fy * grid) * grid + int(fx * grid)
            k = default_cells(grid * grid)
            expected = [cell in top_cells(w["attention"], k) or
                        ("location" in w and w["location"][0] * grid + w["location"][1] == cell) for w in entry["words"]]
            assert panel.get_attribute("data-cell") == str(cell)
            assert classes(panel.locator(".caption .word"), "lit") == expected
            assert panel.locator(".probe").count() == 1
            lit_anywhere += sum(expected)
    assert lit_anywhere >= len(entries["tiny-soft"]["words"])  # every word has a top cell: the check can fail

    # The page picks cells as the deletion test does: the same k, the same order and ties.
    sides = list(range(1, 31))
    assert page.evaluate("(gs) => gs.map(defaultCells)", sides) == [default_cells(g * g) for g in sides]
    rng = np.random.default_rng(0)
    for g, k in [(2, 1), (7, 5), (14, 20)]:
        grid = (rng.integers(0, 4, (g, g)) / 10).tolist()  # many ties
        assert page.evaluate("([grid, k]) => topCells(grid, k)", [grid, k]) == top_cells(grid, k)


def test_a_refused_erase_shows_the_servers_error(page, problems):
    def spoil(route):  # the page only sends good boxes: make one bad on its way to the server
        body = re.sub(rb'(name="erase"\r\n\r\n)[^\r]*', rb"\1[[1, 2, 3]]", route.request.post_data_buffer)
        route.continue_(post_data=body)

    page.select_option("#compare", "")
    page.locator(".demos button[title='astronaut.jpg']").click()
    page.locator(".panel .caption .word").first.wait_for()
    page.route("**/api/caption", spoil)
    page.locator(".erase-word").first.click()
    error = page.locator("#error")
    error.wait_for(state="visible")
    assert "erase box 1 must be four numbers" in error.inner_text()
    assert "four numbers" in page.locator(".panel .result .bad").inner_text()
    expected = "the server responded with a status of 400"
    assert sum(expected in p for p in problems) == 1
    problems[:] = [p for p in problems if expected not in p]
