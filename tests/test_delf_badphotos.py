"""Every kind of bad photo is named in the report and never stops a batch;
odd but valid photos just work."""

import io

import numpy as np
import pytest
from PIL import Image

from delf.extract import extract_to_h5
from delf.featio import FeatureFile
from delf.image import ImageError, load_image

from .conftest import SAMPLES

PHOTO = SAMPLES / "lund_01.jpg"


def _bad_photos(d):
    raw = PHOTO.read_bytes()
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.jpg").write_text("this is a text file, not a photo\n")
    (d / "truncated.jpg").write_bytes(raw[: len(raw) // 3])
    corrupt = bytearray(raw)
    corrupt[600:] = bytes(len(corrupt) - 600)  # header kept, entropy-coded data zeroed
    (d / "corrupt.jpg").write_bytes(bytes(corrupt))
    Image.new("RGB", (20, 15), "white").save(d / "tiny.png")
    # A decompression bomb: 144 megapixels that compress to a few kilobytes.
    Image.new("1", (12000, 12000)).save(d / "bomb.png", optimize=False)
    return {
        "empty.jpg": "empty file",
        "notes.jpg": "not an image",
        "truncated.jpg": "truncated",
        "corrupt.jpg": "corrupt or truncated",
        "tiny.png": "too small",
        "bomb.png": "decompression bomb",
    }


def test_each_bad_photo_gets_a_clear_error(tmp_path):
    for name, problem in _bad_photos(tmp_path).items():
        with pytest.raises(ImageError, match=problem) as info:
            load_image(tmp_path / name)
        assert name in str(info.value)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_image(tmp_path / "missing.jpg")


def test_batch_goes_on_past_bad_photos(tmp_path, small_extractor):
    bad = _bad_photos(tmp_path)
    (tmp_path / "good.jpg").write_bytes(PHOTO.read_bytes())
    report = extract_to_h5([tmp_path], tmp_path / "out.h5", extractor=small_extractor, progress=False)
    assert report.extracted == ["good.jpg"]
    failed = {p.split("/")[-1]: why for p, why in report.failed}
    assert set(failed) == set(bad)
    assert all(name in report.summary() for name in bad)
    with FeatureFile(tmp_path / "out.h5") as ff:
        assert ff.names == ["good.jpg"]


def _encode(im, fmt, **kw):
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def test_odd_but_valid_photos(tmp_path, small_extractor):
    rgb = np.asarray(Image.open(PHOTO))
    h, w = rgb.shape[:2]
    im = Image.fromarray(rgb)
    # EXIF orientation 6: stored sideways, shown rotated 90 degrees clockwise.
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = im.transpose(Image.Transpose.ROTATE_90)
    (tmp_path / "exif.jpg").write_bytes(_encode(sideways, "JPEG", exif=exif, quality=95))
    upright = load_image(tmp_path / "exif.jpg")
    assert upright.shape == (h, w, 3)
    assert np.abs(upright.astype(int) - rgb.astype(int)).mean() < 12
    (tmp_path / "gray.jpg").write_bytes(_encode(im.convert("L"), "JPEG"))
    (tmp_path / "cmyk.jpg").write_bytes(_encode(im.convert("CMYK"), "JPEG"))
    rgba = im.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(tmp_path / "rgba.png")
    im.convert("P").save(tmp_path / "palette.gif")
    gray16 = (np.asarray(im.convert("L")).astype(np.uint16) * 257)
    Image.fromarray(gray16).save(tmp_path / "gray16.png")
    assert Image.open(tmp_path / "gray16.png").mode.startswith("I")
    for name in ("gray.jpg", "cmyk.jpg", "rgba.png", "palette.gif", "gray16.png"):
        out = load_image(tmp_path / name)
        assert out.shape == (h, w, 3) and out.dtype == np.uint8, name
        assert np.abs(out.astype(int).mean() - rgb.mean()) < 40, name
    g16 = load_image(tmp_path / "gray16.png")
    np.testing.assert_array_equal(g16[..., 0], np.asarray(im.convert("L")))
    report = extract_to_h5([tmp_path], tmp_path / "o.h5", extractor=small_extractor, progress=False)
    assert not report.failed and len(report.extracted) == 6
