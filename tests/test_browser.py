"""The web page end to end in a real headless Chromium: upload, caption, hover a word, see its heatmap.

Needs Debian's ``chromium`` package and the ``playwright`` Python package (its own browser download is
never used); skipped with the reason when either is missing.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest

pytest.importorskip("starlette", reason="the web server needs starlette (pip install -r requirements.txt)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

from captioner.web.server import CaptionService, create_app, load_models, running_server  # noqa: E402
from captioner.heatmaps import attention_scale, percent  # noqa: E402

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
    words = panel.locator(".caption button")
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
    page.locator(".panel:nth-child(2) .caption button").first.wait_for()
    panels = page.locator(".panel")
    assert panels.count() == 2
    assert [panels.nth(i).get_attribute("data-model") for i in range(2)] == ["tiny-soft", "tiny-hard"]
    hard = panels.nth(1)
    hard.locator(".caption button").first.hover()
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
    page.locator(".panel .caption button").first.wait_for()
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
            pg.locator(".panel .caption button").first.wait_for()
            assert pg.locator(".panel").count() == 1 and pg.locator("#error").is_hidden()
        finally:
            pg.close()
