"""Upload checks in cloud.functions.images: order of the checks, status codes, decode of real photos."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from cloud.functions.images import ImageRejected, decode_jpeg, encode_jpeg, open_checked
from tests.bad_images import png_claiming
from tests.photos import packaged

MAX_BYTES = 6 * 1024 * 1024
MAX_PIXELS = 16_000_000


def _status(data: bytes, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> int:
    with pytest.raises(ImageRejected) as info:
        open_checked(data, max_bytes, max_pixels)
    assert str(info.value)  # every rejection explains itself
    return info.value.status


def test_empty_body_is_400() -> None:
    assert _status(b"") == 400


def test_text_body_is_415() -> None:
    assert _status(b"hello, this is not an image\n") == 415


def test_truncated_jpeg_is_400() -> None:
    data = packaged("face_recognition/obama.jpg").read_bytes()
    assert _status(data[: len(data) // 2]) == 400


def test_png_claiming_20000x20000_is_413_before_decoding() -> None:
    data = png_claiming(20000, 20000)
    assert len(data) < 100
    assert _status(data) == 413


def test_pixel_limit_is_read_from_the_header() -> None:
    # 5000x5000 is under Pillow's own bomb limit: this is our check, not Pillow's.
    with pytest.raises(ImageRejected, match="5000x5000") as info:
        open_checked(png_claiming(5000, 5000), MAX_BYTES, MAX_PIXELS)
    assert info.value.status == 413


def test_size_is_checked_before_type() -> None:
    big_jpeg_like = b"\xff\xd8\xff" + bytes(7 * 1024 * 1024)
    assert _status(big_jpeg_like) == 413
    assert _status(bytes(7 * 1024 * 1024)) == 413  # not 415: too large comes first


@pytest.mark.parametrize("name", ["face_recognition/obama.jpg", "skimage/astronaut.png"])
def test_real_jpeg_and_png_decode_to_rgb(name: str) -> None:
    path = packaged(name)
    image = open_checked(path.read_bytes(), MAX_BYTES, MAX_PIXELS)
    with Image.open(path) as original:
        assert image.size == original.size
    assert image.mode == "RGB"


def test_real_photo_over_a_small_pixel_limit_is_413() -> None:
    data = packaged("face_recognition/obama.jpg").read_bytes()
    assert _status(data, max_pixels=640 * 480) == 413


def test_exif_orientation_is_applied() -> None:
    with Image.open(packaged("face_recognition/obama.jpg")) as original:
        exif = Image.Exif()
        exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
        out = io.BytesIO()
        original.convert("RGB").save(out, "JPEG", exif=exif)
        width, height = original.size
    image = open_checked(out.getvalue(), MAX_BYTES, MAX_PIXELS)
    assert image.size == (height, width)


def test_jpeg_round_trip_of_a_real_crop() -> None:
    with Image.open(packaged("skimage/astronaut.png")) as photo:
        crop = np.asarray(photo.convert("RGB").crop((180, 60, 340, 220)))
    decoded = decode_jpeg(encode_jpeg(crop), (160, 160))
    assert decoded.shape == crop.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - crop.astype(int)).mean() < 4


def test_decode_jpeg_refuses_other_bytes() -> None:
    with pytest.raises(ImageRejected):
        decode_jpeg(packaged("skimage/astronaut.png").read_bytes(), (512, 512))


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A real 160x160 crop's JPEG with the width and height in its frame header (SOF0) replaced."""
    with Image.open(packaged("skimage/astronaut.png")) as photo:
        crop = np.asarray(photo.convert("RGB").crop((180, 60, 340, 220)))
    data = bytearray(encode_jpeg(crop))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_decode_jpeg_checks_the_header_dimensions_before_decoding() -> None:
    # 9000x9000 is under Pillow's own bomb limits: without our check it would allocate 243 MB.
    for width, height in ((9000, 9000), (161, 160)):
        with pytest.raises(ImageRejected, match=f"JPEG is {width}x{height}, expected 160x160") as info:
            decode_jpeg(_jpeg_claiming(width, height), (160, 160))
        assert info.value.status == 400


def test_encode_jpeg_refuses_non_rgb_arrays() -> None:
    with pytest.raises(ValueError, match="uint8"):
        encode_jpeg(np.zeros((4, 4), dtype=np.float32))
