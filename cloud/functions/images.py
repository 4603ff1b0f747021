"""Untrusted image bytes in, RGB pixels out; JPEG helpers for 160x160 face crops.

`open_checked` rejects cheaply before the expensive step: size and type from the first bytes, then
the dimensions from the header (Pillow's `Image.open` is lazy), and only then the full decode, so a
small file that claims a huge canvas never gets to allocate it. Accepted: JPEG (grey, RGB, CMYK),
PNG (every bit depth, palette, alpha) and WebP (lossy, lossless, alpha; the first frame of an animation).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}
ACCEPTED = "JPEG, PNG and WebP"
# Pillow's modes for grey samples wider than 8 bits (16-bit PNG is "I;16"); converting them with
# `convert("RGB")` clips every value above 255, so a 16-bit photo comes out white.
_WIDE_GREY = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": None, "F": None}
BACKGROUND = (255, 255, 255)  # what transparent pixels become: a detector sees the picture as a viewer does


class ImageRejected(ValueError):
    """An upload we refuse; `status` is the HTTP status to answer with (400, 413 or 415)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def sniff_format(data: bytes) -> str | None:
    """'JPEG', 'PNG' or 'WEBP' from the file signature, else None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _MAGIC.items() if data.startswith(magic)), None)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB as a viewer would show `image`: wide grey samples scaled (not clipped) to 8 bits,
    transparency composited over BACKGROUND, CMYK and palettes through Pillow's conversions."""
    if image.mode in _WIDE_GREY:
        return Image.fromarray(_grey_to_8bit(image, _WIDE_GREY[image.mode])).convert("RGB")
    if "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (*BACKGROUND, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def _grey_to_8bit(image: Image.Image, full_scale: int | None) -> np.ndarray:
    """uint8 HxW grey. 16-bit modes have a fixed full scale; "I" and "F" do not (Pillow gives "I" for
    16-bit TIFF/PNG samples, "F" for float data in 0-1 or 0-255), so theirs is read from the data."""
    samples = np.asarray(image, dtype=np.float32)
    if full_scale is None:
        peak = float(samples.max()) if samples.size else 0.0
        full_scale = 1 if image.mode == "F" and peak <= 1.0 else 255 if peak <= 255 else 65535
    return np.clip(np.rint(samples * (255.0 / full_scale)), 0, 255).astype(np.uint8)


def open_checked(data: bytes, max_bytes: int, max_pixels: int) -> Image.Image:
    """Validate and decode an uploaded JPEG/PNG/WebP into an upright 8-bit RGB image, or raise ImageRejected."""
    if not data:
        raise ImageRejected(400, f"empty body: POST the image ({ACCEPTED}) as the request body")
    if len(data) > max_bytes:
        raise ImageRejected(413, f"body is {len(data)} bytes; the limit is {max_bytes}")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageRejected(415, f"unsupported body: only {ACCEPTED} images are accepted")
    if fmt == "WEBP":  # libwebp allocates the canvas when Pillow opens the file: check its size first
        size = webp_size(data)
        if size is None:
            raise ImageRejected(400, "unreadable WEBP header: no VP8, VP8L or VP8X chunk with a size")
        _check_pixels(*size, max_pixels)
    try:
        image = Image.open(io.BytesIO(data), formats=[fmt])  # reads the header only
    except Image.DecompressionBombError as exc:
        raise ImageRejected(413, f"image dimensions too large: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(400, f"unreadable {fmt} header: {exc}") from exc
    _check_pixels(*image.size, max_pixels)
    try:
        image.load()
        # Cameras store rotation in EXIF; boxes must refer to the upright picture the edge sees.
        upright = ImageOps.exif_transpose(image)
        return to_rgb(upright)
    except Image.DecompressionBombError as exc:
        raise ImageRejected(413, f"image dimensions too large: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise ImageRejected(400, f"cannot decode {fmt} image: {exc}") from exc


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageRejected(
            413, f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )


def webp_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a WebP file's first chunk (RIFF container, then VP8X's canvas, or the
    VP8/VP8L bitstream header), or None when it is not there. Format: RFC 9649, sections 2.5-2.7."""
    chunk, payload = data[12:16], data[20:30]
    if chunk == b"VP8X" and len(payload) >= 10:
        return int.from_bytes(payload[4:7], "little") + 1, int.from_bytes(payload[7:10], "little") + 1
    if chunk == b"VP8L" and len(payload) >= 5 and payload[0] == 0x2F:
        bits = int.from_bytes(payload[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(payload) >= 10 and payload[3:6] == b"\x9d\x01\x2a":
        return (int.from_bytes(payload[6:8], "little") & 0x3FFF,
                int.from_bytes(payload[8:10], "little") & 0x3FFF)
    return None


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """uint8 HxWx3 RGB array -> JPEG bytes."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 RGB array, got {rgb.dtype} {rgb.shape}")
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def decode_jpeg(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """JPEG bytes of exactly `size` (width, height) -> uint8 HxWx3 RGB array; ImageRejected(400) when
    they are not a decodable JPEG, or when the header names other dimensions (checked before decoding)."""
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:  # reads the header only
            if image.size != size:
                raise ImageRejected(400, f"JPEG is {image.width}x{image.height}, expected {size[0]}x{size[1]}")
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except ImageRejected:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageRejected(400, f"not a decodable JPEG: {exc}") from exc
