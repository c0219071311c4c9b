"""Heatmap figure, GIF and HTML report: right panel count, right maps, one honest colour scale, atomic."""

from __future__ import annotations

import base64
import io
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioner.errors import ConfigError
from captioner.heatmaps import (
    attention_scale,
    layout,
    overlay,
    percent,
    render_gif,
    render_heatmap,
    render_html_report,
    upsample_attention,
)

GRID = 7


def _image(width: int = 120, height: int = 90) -> Image.Image:
    """Mid-grey picture with a dark block: never near-white, so panels stand out from the white page."""
    arr = np.full((height, width, 3), 128, dtype=np.uint8)
    arr[height // 4: height // 2, width // 4: width // 2] = (40, 60, 90)
    return Image.fromarray(arr)


def _alphas(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.random((n, GRID, GRID))
    return a / a.sum(axis=(1, 2), keepdims=True)


def _runs(mask_row: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    """(start, length) of True runs at least ``min_len`` long."""
    padded = np.concatenate([[False], mask_row, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(s, e - s) for s, e in zip(edges[::2], edges[1::2]) if e - s >= min_len]


def _count_panels(png: Path, min_side: int = 40) -> tuple[int, int]:
    """Count image panels on the white page by finding large non-white blocks: (panels, panel rows).

    Title glyphs make only short runs and thin frame lines make only thin bands, so neither counts.
    """
    ink = (np.asarray(Image.open(png).convert("RGB")) < 240).any(axis=2)
    tall_rows = [y for y in range(ink.shape[0]) if _runs(ink[y], min_side)]
    bands: list[list[int]] = []
    for y in tall_rows:
        if bands and y == bands[-1][-1] + 1:
            bands[-1].append(y)
        else:
            bands.append([y])
    bands = [b for b in bands if len(b) >= min_side]
    # Per band, the typical row's run count: a few rows may be cut by a hard-attention outline.
    panels = sum(int(np.median([len(_runs(ink[y], min_side)) for y in b])) for b in bands)
    return panels, len(bands)


def _peak_cell_grid(row: int, col: int) -> np.ndarray:
    rng = np.random.default_rng(row * 31 + col)
    a = rng.random((GRID, GRID)) * 0.1
    a[row, col] = 1.0
    return a / a.sum()


# ------------------------------------------------------------------------------- upsample_attention


@pytest.mark.parametrize("cell", [(0, 0), (3, 4), (6, 6), (0, 6), (5, 1)])
@pytest.mark.parametrize("size", [(90, 120), (224, 224), (301, 157)])
def test_upsample_peak_lies_in_the_peak_cells_patch(cell: tuple[int, int], size: tuple[int, int]) -> None:
    heat = upsample_attention(_peak_cell_grid(*cell), size)
    assert heat.shape == size  # (height, width), not PIL's (width, height)
    assert heat.min() == pytest.approx(0.0) and heat.max() == pytest.approx(1.0)
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    height, width = size
    assert math.floor(y * GRID / height) == cell[0]
    assert math.floor(x * GRID / width) == cell[1]


def test_upsample_with_vmax_keeps_the_weights_proportions() -> None:
    grid = _peak_cell_grid(2, 5)
    own = upsample_attention(grid, (70, 70), vmax=grid.max())
    half = upsample_attention(grid, (70, 70), vmax=2 * grid.max())
    assert own.max() > 0.8 and np.median(own) > 0.01  # 0 .. vmax, not min .. max: low cells keep some heat
    np.testing.assert_allclose(half, own / 2, atol=1e-6)
    flat = np.full((GRID, GRID), 1 / GRID**2)
    np.testing.assert_allclose(upsample_attention(flat, (20, 20), vmax=0.5), 2 / GRID**2, rtol=1e-4)
    assert not upsample_attention(grid, (20, 20), vmax=0.0).any()


def test_upsample_accepts_a_flat_square_vector_and_flat_maps_give_zeros() -> None:
    grid = _peak_cell_grid(2, 5)
    np.testing.assert_allclose(upsample_attention(grid.ravel(), (50, 60)), upsample_attention(grid, (50, 60)))
    assert not upsample_attention(np.full((GRID, GRID), 1 / GRID**2), (20, 20)).any()


@pytest.mark.parametrize("bad", [np.ones(10), np.ones((2, 3, 4)), np.array([[0.5, np.nan]]), -np.ones((3, 3))])
def test_upsample_rejects_malformed_maps(bad: np.ndarray) -> None:
    with pytest.raises(ConfigError):
        upsample_attention(bad, (10, 10))


def test_overlay_marks_only_the_outline_of_the_hard_attention_cell() -> None:
    img = _image(140, 140)
    grid = _peak_cell_grid(3, 2)
    plain = np.asarray(overlay(img, grid)).astype(int)
    marked = np.asarray(overlay(img, grid, location=(3, 2))).astype(int)
    changed = np.argwhere((plain != marked).any(axis=2))
    assert len(changed) > 0
    cell = 140 / GRID
    assert changed[:, 0].min() >= 3 * cell - 1 and changed[:, 0].max() <= 4 * cell
    assert changed[:, 1].min() >= 2 * cell - 1 and changed[:, 1].max() <= 3 * cell
    centre = (int(3.5 * cell), int(2.5 * cell))
    assert (plain[centre] == marked[centre]).all()  # an outline, not a filled box


# ------------------------------------------------------------------------------ one colour scale

HOT_CELL = (5, 1)  # both chosen cells lie on the test image's plain grey, away from its dark block
FLAT_PEAK = (0, 6)


def _flat_and_hot() -> list[np.ndarray]:
    """Two words' maps: a nearly uniform one (a ±10% ramp peaking at FLAT_PEAK) and a one-hot one."""
    rows, cols = np.mgrid[0:GRID, 0:GRID]
    ramp = 1.0 + 0.1 * (cols - rows) / (GRID - 1)
    hot = np.zeros((GRID, GRID))
    hot[HOT_CELL] = 1.0
    return [ramp / ramp.sum(), hot]


def _cell_diff(panel: np.ndarray, plain: np.ndarray, cell: tuple[int, int]) -> float:
    """Mean absolute colour change, over ``cell``'s patch of the image, that the overlay made."""
    h, w = plain.shape[:2]
    r, c = cell
    ys = slice(math.ceil(r * h / GRID), math.floor((r + 1) * h / GRID))
    xs = slice(math.ceil(c * w / GRID), math.floor((c + 1) * w / GRID))
    return float(np.abs(panel[ys, xs].astype(float) - plain[ys, xs].astype(float)).mean())


def _decode(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))


def _panels_png(tmp_path: Path, scale: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """(plain input panel, word panels) cut out of a rendered PNG: the large non-white blocks of its one row."""
    out = render_heatmap(_image(), ["there", "dog"], _flat_and_hot(), tmp_path / "f.png", scale=scale)
    page = np.asarray(Image.open(out).convert("RGB"))
    ink = (page < 240).any(axis=2)
    rows = [y for y in range(ink.shape[0]) if len(_runs(ink[y], 40)) == 3]
    y0, y1 = rows[0], rows[-1] + 1
    boxes = _runs(ink[(y0 + y1) // 2], 40)
    crops = [page[y0:y1, x: x + n] for x, n in boxes]
    assert all(c.shape[:2] == (90, 120) for c in crops)  # figimage places panels at their own size
    return crops[0], crops[1:]


def _panels_gif(tmp_path: Path, scale: str) -> tuple[np.ndarray, list[np.ndarray]]:
    out = render_gif(_image(), ["there", "dog"], _flat_and_hot(), tmp_path / "a.gif", scale=scale)
    frames = []
    with Image.open(out) as im:
        for k in range(im.n_frames):
            im.seek(k)
            frames.append(np.asarray(im.convert("RGB"))[:90])  # the picture above the label bar
    return np.asarray(_image()), frames


def _panels_html(tmp_path: Path, scale: str) -> tuple[np.ndarray, list[np.ndarray]]:
    src = tmp_path / "pic.png"
    _image().save(src)
    entry = {"image": str(src), "caption": "there dog", "score": -1.0, "model": "m",
             "words": [{"word": w, "attention": a.tolist()} for w, a in zip(["there", "dog"], _flat_and_hot())]}
    text = render_html_report([entry], tmp_path / "r.html", scale=scale).read_text("utf-8")
    plain, *panels = [_decode(u) for u in re.findall(r'<img[^>]*\bsrc="([^"]*)"', text)]
    return plain, panels  # all JPEG: the plain photo went through the same compression


PANELS = {"png": _panels_png, "gif": _panels_gif, "html": _panels_html}


@pytest.mark.parametrize("output", list(PANELS))
def test_shared_scale_keeps_a_flat_map_flat_beside_a_peaked_one(tmp_path: Path, output: str) -> None:
    plain, (flat, hot) = PANELS[output](tmp_path, "caption")
    flat_at_peak = _cell_diff(flat, plain, FLAT_PEAK)
    hot_at_peak = _cell_diff(hot, plain, HOT_CELL)
    assert hot_at_peak > 40                    # the one-hot word's cell is strongly coloured
    assert flat_at_peak < 0.35 * hot_at_peak   # the flat word's own peak barely tints the photo
    # ...and the flat panel is equally faint everywhere: no cell of it stands out from the others.
    spread = [_cell_diff(flat, plain, (r, c)) for r in (0, 3, 6) for c in (0, 6)]
    assert max(spread) - min(spread) < 0.25 * hot_at_peak


@pytest.mark.parametrize("output", list(PANELS))
def test_per_word_scale_makes_the_flat_map_look_as_sure_as_the_peaked_one(tmp_path: Path, output: str) -> None:
    """The old look, kept as scale="word": the same check cannot tell the two maps apart."""
    plain, (flat, hot) = PANELS[output](tmp_path, "word")
    assert _cell_diff(flat, plain, FLAT_PEAK) > 0.7 * _cell_diff(hot, plain, HOT_CELL)


def test_attention_scale_is_the_caption_wide_max_and_per_word_figures() -> None:
    flat, hot = _flat_and_hot()
    sc = attention_scale([flat, 0.5 * hot])
    assert sc.vmax == pytest.approx(0.5) and sc.top == pytest.approx(0.5)
    assert sc.peaks == pytest.approx((flat.max(), 0.5))
    assert sc.image_weights == pytest.approx((1.0, 0.5))
    assert sc.show_image_weight  # one word put only half its attention on the image (a sentinel model)
    assert sc.label(1) == "peak 50% · img 50%" and sc.label(0).endswith(" · img 100%")
    ordinary = attention_scale([flat, hot])
    assert not ordinary.show_image_weight and ordinary.label(1) == "peak 100%"
    assert ordinary.legend() == "colour scale 0–100%"
    assert attention_scale([flat, hot], "word").top is None
    with pytest.raises(ConfigError):
        attention_scale([flat], "image")


@pytest.mark.parametrize(("x", "text"), [(1.0, "100%"), (0.314, "31%"), (0.0251, "3%"), (0.0204, "2%"),
                                         (0.00996, "1%"), (0.0051, "1%"), (0.0049, "0.5%"), (0.0004, "0%"),
                                         (0.0, "0%")])
def test_percent_is_short_and_rounds_half_up(x: float, text: str) -> None:
    assert percent(x) == text


def test_png_titles_and_gif_labels_carry_each_words_peak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure
    from PIL import ImageDraw

    flat, hot = _flat_and_hot()
    maps = [flat, 0.6 * hot]  # the second word gave 40% of its attention to the sentinel
    seen: list[str] = []  # every text drawn: figure titles (PNG) and frame labels (GIF)
    real_fig_text, real_draw_text = Figure.text, ImageDraw.ImageDraw.text

    def fig_text(self, x, y, s, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(s)
        return real_fig_text(self, x, y, s, *args, **kwargs)

    def draw_text(self, xy, text, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(text)
        return real_draw_text(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(Figure, "text", fig_text)
    monkeypatch.setattr(ImageDraw.ImageDraw, "text", draw_text)

    def words_only(texts: list[str]) -> str:  # a label may sit beside its word or on the next line
        return " ".join(texts).replace("\n", " ").replace(" · ", " ")

    render_heatmap(_image(), ["there", "dog"], maps, tmp_path / "f.png", caption="there dog")
    assert seen[0].endswith("colour scale 0–60%")
    there = f"there peak {percent(flat.max())} img 100%"
    assert words_only(seen[1:]) == f"{there} dog peak 60% img 60%"
    seen.clear()
    render_gif(_image(), ["there", "dog"], maps, tmp_path / "a.gif")
    assert words_only(seen) == f"{there}  (1/2) dog peak 60% img 60%  (2/2)"


# ------------------------------------------------------------------------------------- PNG figure


def test_layout_wraps_panels_into_rows() -> None:
    assert layout(13, 5) == (3, 5)
    assert layout(3, 5) == (1, 3)
    assert layout(10, 5) == (2, 5)
    with pytest.raises(ConfigError):
        layout(4, 0)


@pytest.mark.parametrize(("n_words", "cols"), [(0, 5), (1, 5), (4, 5), (5, 5), (12, 5), (7, 3)])
def test_heatmap_png_has_one_panel_per_word_plus_the_image(tmp_path: Path, n_words: int, cols: int) -> None:
    words = [f"w{i}" for i in range(n_words)]
    out = render_heatmap(_image(), words, _alphas(n_words), tmp_path / "fig.png", caption="a test", cols=cols)
    assert out == tmp_path / "fig.png"
    with Image.open(out) as im:
        im.verify()
    panels, rows = _count_panels(out)
    assert panels == 1 + n_words
    assert rows == math.ceil((1 + n_words) / cols)
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]  # no temp file left behind


def test_heatmap_png_grows_with_the_caption_and_marks_hard_attention(tmp_path: Path) -> None:
    short = render_heatmap(_image(), ["a", "b"], _alphas(2), tmp_path / "short.png")
    long_words = [f"w{i}" for i in range(11)]
    locs = [tuple(np.unravel_index(a.argmax(), a.shape)) for a in _alphas(11)]
    long = render_heatmap(_image(), long_words, list(_alphas(11)), tmp_path / "long.png", locations=locs)
    with Image.open(short) as a, Image.open(long) as b:
        assert b.height > a.height and b.width > a.width
    assert _count_panels(long)[0] == 12


def test_heatmap_titles_are_not_parsed_as_math(tmp_path: Path) -> None:
    out = render_heatmap(_image(), [r"$\frac$", "$5"], _alphas(2), tmp_path / "m.png", caption=r"costs $\frac$")
    assert _count_panels(out)[0] == 3


def test_heatmap_reads_an_image_path(tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    _image(300, 200).save(src)
    out = render_heatmap(src, ["one"], _alphas(1), tmp_path / "fig.png")
    assert _count_panels(out)[0] == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alphas": _alphas(2)},                                   # too few maps
        {"alphas": _alphas(4)},                                   # too many maps
        {"alphas": np.ones((3, 2, 3, 4))},                        # maps are not 2-D grids
        {"alphas": _alphas(3), "locations": [(0, 0)]},            # one location for three words
        {"alphas": _alphas(3), "locations": [(0, 0), (1, 1), (GRID, 0)]},  # outside the grid
        {"alphas": _alphas(3), "cols": 0},
    ],
)
def test_mismatched_inputs_raise_config_error_and_write_nothing(tmp_path: Path, kwargs: dict) -> None:
    for render in (render_heatmap, render_gif):
        args = dict(kwargs)
        if render is render_gif:
            args.pop("cols", None)
            if "cols" in kwargs:
                continue
        with pytest.raises(ConfigError):
            render(_image(), ["a", "b", "c"], out_path=tmp_path / "out", **args)
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------------------- GIF


def test_gif_has_one_frame_per_word_even_when_frames_repeat(tmp_path: Path) -> None:
    words = ["a", "dog", "a", "a", "dog"]
    same = np.broadcast_to(_alphas(1)[0], (len(words), GRID, GRID))  # identical maps and repeated words
    out = render_gif(_image(), words, same, tmp_path / "a.gif", duration_ms=250)
    with Image.open(out) as im:
        assert im.format == "GIF"
        assert im.n_frames == len(words)
        assert im.info["duration"] == 250
    assert [p.name for p in tmp_path.iterdir()] == ["a.gif"]


def test_gif_failure_while_writing_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = Image.Image.save

    def broken_save(self: Image.Image, fp, *args, **kwargs):  # type: ignore[no-untyped-def]
        real_save(self, fp, *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError):
        render_gif(_image(), ["a", "b"], _alphas(2), tmp_path / "a.gif")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------- HTML


def _entry(path: Path, words: list[str], caption: str, hard: bool = False) -> dict:
    maps = _alphas(len(words))
    out_words = []
    for w, a in zip(words, maps):
        item = {"word": w, "attention": a.tolist()}
        if hard:
            item["location"] = [int(v) for v in np.unravel_index(a.argmax(), a.shape)]
        out_words.append(item)
    return {"image": str(path), "caption": caption, "score": -1.25, "words": out_words, "model": "soft-test"}


def test_html_report_is_self_contained_and_escaped(tmp_path: Path) -> None:
    src = tmp_path / "pic.png"
    _image().save(src)
    caption = 'a <b>"dog"</b> & <script>alert(1)</script>'
    words = ["a", "<b>dog</b>", "&", "cat"]
    entries = [
        _entry(src, words, caption),
        _entry(src, ["two", "words"], "two words", hard=True),
        {"image": "missing.jpg", "error": "cannot decode <jpeg>"},
        _entry(tmp_path / "gone.png", ["x"], "x"),  # image vanished since captioning
    ]
    out = render_html_report(entries, tmp_path / "report.html", title="t <1>")
    text = out.read_text(encoding="utf-8")

    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", text, flags=re.I)
    assert "http://" not in text and "https://" not in text
    srcs = re.findall(r"<img[^>]*\bsrc=\"([^\"]*)\"", text)
    assert len(srcs) == (1 + 4) + (1 + 2)  # image + one panel per word, for the two good entries
    assert all(s.startswith("data:image/") for s in srcs)
    assert text.count("<img") == len(srcs)

    assert "a &lt;b&gt;&quot;dog&quot;&lt;/b&gt; &amp; &lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<script>alert(1)" not in text and "<b>dog</b>" not in text
    assert "t &lt;1&gt;" in text
    assert "cannot decode &lt;jpeg&gt;" in text
    assert text.count('class="failed"') == 2
    assert "gone.png" in text
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".png"] == ["report.html"]


def test_html_report_marks_malformed_attention_as_failed(tmp_path: Path) -> None:
    src = tmp_path / "pic.png"
    _image().save(src)
    bad = _entry(src, ["a", "b"], "a b")
    bad["words"][1]["attention"] = [[1, 2], [3]]  # ragged rows
    good = _entry(src, ["c"], "c")
    text = render_html_report([bad, good], tmp_path / "r.html").read_text(encoding="utf-8")
    assert text.count('class="failed"') == 1
    assert text.count("<img") == 2


def test_html_report_uses_the_caption_wide_max_and_labels_each_word(tmp_path: Path) -> None:
    src = tmp_path / "pic.png"
    _image().save(src)
    flat, hot = _flat_and_hot()
    peaked = 0.3 * hot + 0.7 * flat  # rows still sum to 1, peak 0.3 + 0.7 * flat's value there
    entries = [{"image": str(src), "caption": "there dog", "score": -1.0, "model": "m",
                "words": [{"word": "there", "attention": flat.tolist()},
                          {"word": "dog", "attention": peaked.tolist()}]},
               {"image": str(src), "caption": "dog", "score": -1.0, "model": "m",
                "words": [{"word": "dog", "attention": flat.tolist()}]}]
    text = render_html_report(entries, tmp_path / "r.html").read_text("utf-8")
    vmaxes = [float(v) for v in re.findall(r'data-vmax="([^"]+)"', text)]
    assert peaked.max() > 0.3 > 0.1 > flat.max()
    assert vmaxes == pytest.approx([peaked.max(), flat.max()])  # one scale per caption, not per word nor per report
    peaks = [float(v) for v in re.findall(r'data-peak="([^"]+)"', text)]
    assert peaks == pytest.approx([flat.max(), peaked.max(), flat.max()])
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", text)
    assert captions[0] == f"input<small>colour scale 0–{percent(peaked.max())}</small>"
    assert captions[1:3] == [f"there<small>peak {percent(flat.max())}</small>",
                             f"dog<small>peak {percent(peaked.max())}</small>"]  # rows sum to 1: no "img"
    assert "· img" not in text


def test_html_report_refuses_an_unknown_scale(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        render_html_report([], tmp_path / "r.html", scale="global")
    assert list(tmp_path.iterdir()) == []


def test_html_report_resolves_relative_images_against_image_root(tmp_path: Path) -> None:
    _image().save(tmp_path / "pic.png")
    entry = _entry(Path("pic.png"), ["one"], "one")
    text = render_html_report([entry], tmp_path / "out" / "r.html", image_root=tmp_path).read_text("utf-8")
    assert 'class="failed"' not in text and text.count("<img") == 2

