"""load_image / find_images: every odd or hostile file is either an upright RGB picture or one clear ImageError."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioner.data import images
from captioner.errors import ImageError
from captioner.data.images import find_images, load_image


def _half_red_half_blue(w: int = 40, h: int = 20) -> Image.Image:
    img = Image.new("RGB", (w, h), (255, 0, 0))
    img.paste((0, 0, 255), (w // 2, 0, w, h))
    return img


def _is_red(px) -> bool:
    r, g, b = px
    return r > 200 and b < 60 and g < 60


def _is_blue(px) -> bool:
    r, g, b = px
    return b > 200 and r < 60 and g < 60


def png_with_declared_size(path: Path, width: int, height: int) -> Path:
    """A real 1x1 PNG whose IHDR claims ``width x height`` (CRC fixed), i.e. a cheap decompression bomb."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def reason(excinfo, path: Path) -> str:
    """The one-line message names the file; return the rest, so keywords are not matched in tmp_path names."""
    msg = str(excinfo.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg.replace(str(path), "<path>")


# ---------------------------------------------------------------- broken files


def test_missing_file(tmp_path):
    with pytest.raises(ImageError) as e:
        load_image(tmp_path / "nope.jpg")
    assert "no such file" in reason(e, tmp_path / "nope.jpg")


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(ImageError) as e:
        load_image(tmp_path)
    assert "directory" in reason(e, tmp_path)


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageError) as e:
        load_image(p)
    assert "empty" in reason(e, p)


def test_truncated_jpeg(tmp_path):
    full = tmp_path / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(full)
    data = full.read_bytes()
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as e:
        load_image(p)
    assert "truncated" in reason(e, p)


def test_text_file_named_jpg(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a picture\n")
    with pytest.raises(ImageError) as e:
        load_image(p)
    assert "not an image" in reason(e, p)


def test_decompression_bomb_header_is_refused_without_decoding(tmp_path):
    p = png_with_declared_size(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(ImageError) as e:
        load_image(p)
    assert "bomb" in reason(e, p)


def test_pixel_limit_is_read_at_call_time(tmp_path, monkeypatch):
    """Lowering images.MAX_PIXELS (as a server would) must take effect; the default is not frozen at import."""
    p = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(p)
    monkeypatch.setattr(images, "MAX_PIXELS", 64 * 64 - 1)
    with pytest.raises(ImageError) as e:
        load_image(p)
    assert "over the limit" in reason(e, p)
    monkeypatch.setattr(images, "MAX_PIXELS", 64 * 64)
    assert load_image(p).size == (64, 64)
    with pytest.raises(ImageError):
        load_image(p, max_pixels=100)


def test_our_limit_not_pils_warning_threshold_decides(tmp_path, monkeypatch):
    """An image above PIL's warning threshold but within MAX_PIXELS loads (PIL's threshold is lower than ours)."""
    p = tmp_path / "ok.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 4096 px: over PIL's warning, under its 2x error
    assert load_image(p).getpixel((5, 5)) == (10, 20, 30)


# ---------------------------------------------------------------- odd but valid files


@pytest.mark.parametrize("size", [(1, 1), (10000, 200), (200, 10000)])
def test_extreme_sizes_load(tmp_path, size):
    p = tmp_path / "x.png"
    Image.new("RGB", size, (0, 128, 0)).save(p)
    img = load_image(p)
    assert img.mode == "RGB" and img.size == size


def _mode_image(mode: str) -> Image.Image:
    ramp = np.tile(np.linspace(0, 1, 32), (32, 1))
    if mode == "I;16":
        return Image.fromarray((ramp * 60000 + 1000).astype(np.uint16))
    if mode == "CMYK":
        return Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # red in CMYK
    if mode == "P":
        return Image.fromarray((ramp * 255).astype(np.uint8)).convert("RGB").quantize(8)
    if mode == "RGBA":
        return Image.new("RGBA", (32, 32), (0, 0, 255, 255))
    return Image.fromarray((ramp * 255).astype(np.uint8)).convert(mode)


@pytest.mark.parametrize("mode,ext", [("L", ".png"), ("CMYK", ".jpg"), ("RGBA", ".png"), ("I;16", ".png"),
                                      ("P", ".png"), ("LA", ".png"), ("1", ".bmp"), ("CMYK", ".tif")])
def test_any_mode_becomes_rgb(tmp_path, mode, ext):
    p = tmp_path / f"img{ext}"
    _mode_image(mode).save(p)
    assert Image.open(p).mode == mode  # the file really has that mode
    img = load_image(p)
    assert img.mode == "RGB" and img.size == (32, 32)


def test_sixteen_bit_is_rescaled_not_clipped(tmp_path):
    p = tmp_path / "depth.png"
    _mode_image("I;16").save(p)
    arr = np.asarray(load_image(p))[..., 0]
    assert arr.min() == 0 and arr.max() == 255  # the full 8-bit range, not all-white from clipping at 255
    assert (np.diff(arr[0].astype(int)) >= 0).all()  # the ramp is kept in order


def test_cmyk_colour_survives(tmp_path):
    p = tmp_path / "red.jpg"
    _mode_image("CMYK").save(p)
    assert _is_red(load_image(p).getpixel((16, 16)))


@pytest.mark.parametrize("kind", ["RGBA", "P"])
def test_transparent_pixels_become_white(tmp_path, kind):
    p = tmp_path / "t.png"
    if kind == "RGBA":
        img = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
        img.putpixel((0, 0), (255, 0, 0, 255))
    else:
        img = Image.new("P", (8, 8), 0)
        img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
        img.putpixel((0, 0), 1)
        img.info["transparency"] = 0
    img.save(p)
    out = load_image(p)
    assert out.getpixel((4, 4)) == (255, 255, 255)
    assert _is_red(out.getpixel((0, 0)))


@pytest.mark.parametrize("orientation,top,bottom", [(6, _is_red, _is_blue), (8, _is_blue, _is_red)])
def test_exif_rotated_photo_comes_out_upright(tmp_path, orientation, top, bottom):
    """Stored 40x20, left red / right blue; tag 6 means 'rotate 90 deg clockwise to view' (left -> top), 8 the other way."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / "phone.jpg"
    _half_red_half_blue().save(p, exif=exif, quality=95)
    img = load_image(p)
    assert img.size == (20, 40)
    assert top(img.getpixel((10, 5))) and bottom(img.getpixel((10, 34)))


def test_without_exif_nothing_rotates(tmp_path):
    p = tmp_path / "plain.jpg"
    _half_red_half_blue().save(p, quality=95)
    img = load_image(p)
    assert img.size == (40, 20)
    assert _is_red(img.getpixel((5, 10))) and _is_blue(img.getpixel((34, 10)))


# ---------------------------------------------------------------- find_images


def test_find_images_expands_folders_and_reports_problems(tmp_path):
    (tmp_path / "pics" / "sub").mkdir(parents=True)
    for name in ["pics/b.jpg", "pics/a.PNG", "pics/sub/c.webp"]:
        Image.new("RGB", (4, 4)).save(tmp_path / name, format="PNG")
    (tmp_path / "pics" / "readme.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    loose = tmp_path / "loose.bin"
    loose.write_bytes(b"x")  # an explicit file is taken whatever its name; load_image judges it
    found, problems = find_images([str(tmp_path / "pics"), str(tmp_path / "empty"), str(tmp_path / "gone.jpg"),
                                   str(loose)])
    names = [p.relative_to(tmp_path).as_posix() for p in found]
    assert names == ["pics/a.PNG", "pics/b.jpg", "pics/sub/c.webp", "loose.bin"]
    assert [p for p, _ in problems] == [str(tmp_path / "empty"), str(tmp_path / "gone.jpg")]
    assert "no images" in problems[0][1] and "no such file" in problems[1][1]
