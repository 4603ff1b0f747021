"""Uploads in every pixel format the accepted file types can carry, made from a real photo: each
decodes to the picture a viewer sees, and the face in it is found and named.

Formats a client really sends go through `open_checked` as bytes (16-bit PNG, palette PNG with
transparency, grey+alpha PNG, RGBA PNG, CMYK JPEG, WebP lossy/lossless/alpha); modes no accepted
file type produces with this Pillow ("I;16B", "I", "F") go through `to_rgb`, which `open_checked` ends with.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from cloud.functions.detection.detector import Detector
from cloud.functions.enrollment import enroll_photos
from cloud.functions.images import BACKGROUND, ImageRejected, open_checked, to_rgb, webp_size
from cloud.functions.recognition.embedder import Embedder
from cloud.functions.recognition.gallery import Gallery, load_gallery
from cloud.functions.settings import Settings
from tests.photos import packaged, weights_path

PROBE = "face_recognition/obama2.jpg"  # one face; enrolled from another photo of him
THRESHOLD = Settings.model_fields["match_threshold"].default
MAX_BYTES, MAX_PIXELS = 6 * 1024 * 1024, 16_000_000


@pytest.fixture(scope="module")
def models() -> tuple[Detector, Embedder]:
    return Detector(), Embedder(weights_path())


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory, models: tuple[Detector, Embedder]) -> Gallery:
    uri = str(tmp_path_factory.mktemp("modes") / "gallery.npz")
    people = {"barack_obama": [packaged("face_recognition/obama.jpg")],
              "joe_biden": [packaged("face_recognition/biden.jpg")]}
    enroll_photos(uri, weights_path(), people, detector=models[0], embedder=models[1])
    return load_gallery(uri)


def _photo() -> Image.Image:
    with Image.open(packaged(PROBE)) as photo:
        return photo.convert("RGB")


def _grey() -> np.ndarray:
    return np.asarray(_photo().convert("L"))


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _with_transparent_border(image: Image.Image) -> Image.Image:
    """The photo with a fully transparent frame 40 px wide around the face area (alpha from a real mask)."""
    alpha = Image.new("L", image.size, 0)
    alpha.paste(255, (40, 40, image.width - 40, image.height - 40))
    rgba = image.convert("RGBA")
    rgba.putalpha(alpha)
    return rgba


def _png_16bit_grey() -> bytes:
    samples = _grey().astype(np.uint16) * 257  # 8-bit values stretched to the full 16-bit range
    image = Image.frombytes("I;16", (samples.shape[1], samples.shape[0]), samples.astype("<u2").tobytes())
    data = _encoded(image, "PNG")
    assert data[24:26] == b"\x10\x00"  # IHDR: bit depth 16, colour type 0 (grey)
    return data


def _png_palette_transparent() -> bytes:
    rgba = _with_transparent_border(_photo())
    palette = rgba.convert("RGB").quantize(255)
    palette.putpalette(palette.getpalette()[: 255 * 3] + [0, 0, 0])  # index 255: the transparent colour
    indices = np.asarray(palette).copy()
    indices[np.asarray(rgba)[:, :, 3] == 0] = 255
    image = Image.fromarray(indices, "P")
    image.putpalette(palette.getpalette())
    return _encoded(image, "PNG", transparency=255)


def _jpeg_cmyk() -> bytes:
    return _encoded(_photo().convert("CMYK"), "JPEG", quality=92)


UPLOADS: dict[str, tuple[Callable[[], bytes], str]] = {
    # name: (body, the mode Pillow opens it in)
    "PNG 16-bit grey": (_png_16bit_grey, "I;16"),
    "PNG palette + transparency": (_png_palette_transparent, "P"),
    "PNG grey + alpha": (lambda: _encoded(_with_transparent_border(_photo()).convert("LA"), "PNG"), "LA"),
    "PNG RGBA": (lambda: _encoded(_with_transparent_border(_photo()), "PNG"), "RGBA"),
    "JPEG CMYK": (_jpeg_cmyk, "CMYK"),
    "WebP lossy": (lambda: _encoded(_photo(), "WEBP", quality=85), "RGB"),
    "WebP lossless": (lambda: _encoded(_photo(), "WEBP", lossless=True), "RGB"),
    "WebP with alpha": (lambda: _encoded(_with_transparent_border(_photo()), "WEBP", quality=85), "RGBA"),
}


def _in_memory(mode: str) -> Image.Image:
    grey = _grey().astype(np.float64)
    if mode == "I;16B":
        samples = (grey * 257).astype(">u2")
        return Image.frombytes("I;16B", (grey.shape[1], grey.shape[0]), samples.tobytes())
    if mode == "I":  # how Pillow holds 16-bit samples from TIFF and older PNG readers
        return Image.fromarray((grey * 257).astype(np.int32), "I")
    if mode == "F":  # float data scaled 0-1
        return Image.fromarray((grey / 255).astype(np.float32), "F")
    return Image.fromarray(grey.astype(np.float32), "F")  # "F 0-255": float data on the 8-bit scale


def _name_of_the_one_face(rgb: Image.Image, models: tuple[Detector, Embedder], gallery: Gallery) -> str:
    assert rgb.mode == "RGB"
    faces = models[0].detect(rgb)
    assert len(faces) == 1, f"{len(faces)} faces"
    [(name, _distance)] = gallery.match(models[1].embed([faces[0].crop]), THRESHOLD)
    return name


def _close_to_the_grey_photo(rgb: Image.Image) -> None:
    """The decoded pixels are the photo's, not saturated or scaled wrongly (mean error under 1 level)."""
    decoded = np.asarray(rgb.convert("L"), dtype=np.float64)
    assert np.abs(decoded - _grey()).mean() < 1.0


@pytest.mark.parametrize("case", list(UPLOADS))
def test_upload_decodes_and_its_face_is_named(case: str, models: tuple[Detector, Embedder],
                                              gallery: Gallery) -> None:
    make_body, mode = UPLOADS[case]
    body = make_body()
    with Image.open(io.BytesIO(body)) as opened:
        assert opened.mode == mode  # the test really exercises that mode
    rgb = open_checked(body, MAX_BYTES, MAX_PIXELS)
    assert rgb.size == _photo().size
    if mode == "I;16":
        _close_to_the_grey_photo(rgb)
    assert _name_of_the_one_face(rgb, models, gallery) == "barack_obama"


@pytest.mark.parametrize("mode", ["I;16B", "I", "F", "F 0-255"])
def test_wide_grey_modes_scale_to_8_bits(mode: str, models: tuple[Detector, Embedder], gallery: Gallery) -> None:
    image = _in_memory(mode)
    rgb = to_rgb(image)
    _close_to_the_grey_photo(rgb)
    assert _name_of_the_one_face(rgb, models, gallery) == "barack_obama"


def test_saturation_is_what_the_plain_conversion_gives() -> None:
    # Why to_rgb exists: Pillow's own conversion clips 16-bit samples, leaving a white picture with no face.
    with Image.open(io.BytesIO(_png_16bit_grey())) as image:
        assert np.asarray(image.convert("RGB")).mean() > 250
    assert np.asarray(open_checked(_png_16bit_grey(), MAX_BYTES, MAX_PIXELS)).mean() < 150


def test_transparent_pixels_become_the_background() -> None:
    rgb = np.asarray(open_checked(_encoded(_with_transparent_border(_photo()), "PNG"), MAX_BYTES, MAX_PIXELS))
    assert (rgb[:40] == BACKGROUND).all() and (rgb[:, -40:] == BACKGROUND).all()
    inside = np.asarray(_photo())[40:-40, 40:-40]
    assert (rgb[40:-40, 40:-40] == inside).all()


def test_webp_pixel_limit_is_read_from_the_header_before_decoding() -> None:
    body = _encoded(_with_transparent_border(_photo()), "WEBP", quality=85)
    assert body[12:16] == b"VP8X" and webp_size(body) == _photo().size
    lying = bytearray(body)
    lying[24:30] = (20000 - 1).to_bytes(3, "little") * 2  # VP8X canvas: 20000 x 20000
    with pytest.raises(ImageRejected, match="20000x20000") as info:
        open_checked(bytes(lying), MAX_BYTES, MAX_PIXELS)
    assert info.value.status == 413
    for fmt_options in ({"quality": 85}, {"lossless": True}):  # VP8 and VP8L headers
        data = _encoded(_photo(), "WEBP", **fmt_options)  # type: ignore[arg-type]
        assert webp_size(data) == _photo().size
        with pytest.raises(ImageRejected) as small:
            open_checked(data, MAX_BYTES, max_pixels=640 * 480)
        assert small.value.status == 413


def test_truncated_webp_is_400() -> None:
    body = _encoded(_photo(), "WEBP", quality=85)
    with pytest.raises(ImageRejected) as info:
        open_checked(body[: len(body) // 2], MAX_BYTES, MAX_PIXELS)
    assert info.value.status == 400

