"""load_image: every supported source, every kind of bad input."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from skagegender.embedding import IMAGE_FORMATS, ImageLoadError, load_image


def _png_bytes(img):
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _noise():
    return np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)


def _rgb_test_image(w=40, h=30):
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = 200  # red
    rgb[..., 1] = np.arange(w, dtype=np.uint8)[None, :]
    return rgb


def test_path_bytes_pil_and_array_agree(tmp_path):
    rgb = _rgb_test_image()
    path = tmp_path / "a.png"
    Image.fromarray(rgb).save(path)
    from_path = load_image(path)
    assert from_path.shape == (30, 40, 3) and from_path.dtype == np.uint8
    # BGR out: red is the last channel.
    assert (from_path[..., 2] == 200).all() and (from_path[..., 0] == 0).all()
    np.testing.assert_array_equal(load_image(str(path)), from_path)
    np.testing.assert_array_equal(load_image(path.read_bytes()), from_path)
    np.testing.assert_array_equal(load_image(Image.fromarray(rgb)), from_path)
    np.testing.assert_array_equal(load_image(rgb), from_path)
    np.testing.assert_array_equal(load_image(rgb[..., ::-1].copy(), color="bgr"), from_path)


def test_grayscale_rgba_palette_cmyk_and_16_bit(tmp_path):
    gray = np.tile(np.arange(50, dtype=np.uint8), (20, 1))
    out = load_image(_png_bytes(Image.fromarray(gray)))
    assert out.shape == (20, 50, 3)
    np.testing.assert_array_equal(out[..., 0], gray)
    np.testing.assert_array_equal(out[..., 1], gray)

    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent -> composited on white
    assert (load_image(_png_bytes(Image.fromarray(rgba, "RGBA"))) == 255).all()
    rgba[..., :3], rgba[..., 3] = 10, 255  # opaque
    assert (load_image(_png_bytes(Image.fromarray(rgba, "RGBA"))) == 10).all()

    palette = Image.fromarray(_rgb_test_image()).convert("P")
    assert load_image(_png_bytes(palette)).shape == (30, 40, 3)

    cmyk = Image.fromarray(_rgb_test_image()).convert("CMYK")
    buf = io.BytesIO()
    cmyk.save(buf, format="JPEG")
    out = load_image(buf.getvalue())
    assert out.shape == (30, 40, 3)
    assert abs(int(out[..., 2].mean()) - 200) < 12  # red survives the round trip

    sixteen = (np.tile(np.arange(64, dtype=np.uint16), (8, 1)) * 1024).astype(np.uint16)
    path = tmp_path / "16bit.png"
    Image.fromarray(sixteen).save(path)
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (8, 64, 3)
    np.testing.assert_array_equal(out[0, :, 0], (sixteen[0] >> 8).astype(np.uint8))
    np.testing.assert_array_equal(load_image(sixteen)[..., 0], out[..., 0])


def test_exif_orientation_is_applied():
    img = Image.fromarray(_rgb_test_image(w=40, h=30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    assert load_image(buf.getvalue()).shape == (40, 30, 3)


def test_float_and_alpha_arrays():
    assert (load_image(np.ones((4, 4), np.float32)) == 255).all()
    assert (load_image(np.full((4, 4, 3), 100.0)) == 100).all()
    rgba = np.zeros((4, 4, 4), np.uint8)
    assert (load_image(rgba) == 255).all()


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("this is not an image"), "not a recognised image"),
        (lambda p: p.write_bytes(_png_bytes(Image.fromarray(_noise()))[:2000]), "decode"),
    ],
    ids=["empty", "text", "truncated"],
)
def test_bad_files_raise_one_error_type_naming_the_file(tmp_path, make, reason):
    path = tmp_path / "bad.jpg"
    make(path)
    with pytest.raises(ImageLoadError, match=reason) as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_truncated_jpeg_is_an_error(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)).save(
        buf, format="JPEG"
    )
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match="cut.jpg"):
        load_image(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageLoadError, match="directory"):
        load_image(tmp_path)


@pytest.mark.slow
def test_pixel_limit_refuses_before_decoding(tmp_path):
    # 8000 x 8000 = 64 Mpx in a ~10 kB file: a decompression bomb for the default limit.
    path = tmp_path / "bomb.png"
    Image.new("1", (8000, 8000)).save(path)
    assert path.stat().st_size < 100_000
    with pytest.raises(ImageLoadError, match="exceeds the limit"):
        load_image(path)
    assert load_image(path, max_pixels=70_000_000).shape == (8000, 8000, 3)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((0, 5, 3), np.uint8), np.zeros((5, 5, 2), np.uint8), np.zeros(5), 3.5,
     np.full((4, 4), np.nan)],
    ids=["empty", "two-channels", "1d", "number", "nan"],
)
def test_bad_arrays_and_objects(bad):
    with pytest.raises(ImageLoadError):
        load_image(bad)


# The allow-list of formats (issue 12): everything in IMAGE_FORMATS decodes,
# nothing else reaches a decoder.

def _encoded(fmt, rgb):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", sorted(IMAGE_FORMATS))
def test_every_allowed_format_decodes(fmt):
    rgb = _rgb_test_image()
    out = load_image(_encoded(fmt, rgb))
    assert out.shape == (30, 40, 3)
    if fmt not in ("JPEG", "WEBP", "GIF"):  # lossless: exact pixels
        np.testing.assert_array_equal(out[..., ::-1], rgb)


def test_eps_never_reaches_ghostscript(tmp_path, monkeypatch):
    from PIL import EpsImagePlugin

    # A fake Ghostscript on PATH that leaves a mark when Pillow runs it.
    mark = tmp_path / "gs-ran"
    gs = tmp_path / "bin" / "gs"
    gs.parent.mkdir()
    gs.write_text(f"#!/bin/sh\ntouch '{mark}'\nexit 1\n")
    gs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{gs.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # look for gs again
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto 8 8 lineto stroke\n"
    path = tmp_path / "photo.eps"
    path.write_bytes(eps)

    with pytest.raises(ImageLoadError, match="unsupported format EPS") as info:
        load_image(path)
    assert str(path) in str(info.value) and not info.value.transient
    with pytest.raises(ImageLoadError, match="unsupported format EPS"):
        load_image(eps)
    assert not mark.exists()

    # Control: Pillow left to itself hands the same bytes to Ghostscript.
    with pytest.raises(Exception):  # noqa: B017 - whatever Ghostscript makes of it
        Image.open(io.BytesIO(eps)).load()
    assert mark.exists()


def test_icon_is_an_unsupported_format_and_text_is_not_an_image(tmp_path):
    path = tmp_path / "favicon.ico"
    Image.fromarray(_rgb_test_image(32, 32)).save(path, format="ICO")
    with pytest.raises(ImageLoadError, match="unsupported format ICO; skagegender reads JPEG"):
        load_image(path)
    with pytest.raises(ImageLoadError, match="not a recognised image format"):
        load_image(b"hello, this is plain text")
