"""Untrusted image bytes in, RGB pixels out; JPEG helpers for 160x160 face crops.

`open_checked` rejects cheaply before the expensive step: size and type from the first bytes, then
the dimensions from the header (Pillow's `Image.open` is lazy), and only then the full decode, so a
small file that claims a huge canvas never gets to allocate it.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}


class ImageRejected(ValueError):
    """An upload we refuse; `status` is the HTTP status to answer with (400, 413 or 415)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def sniff_format(data: bytes) -> str | None:
    """'JPEG' or 'PNG' from the file signature, else None."""
    return next((fmt for magic, fmt in _MAGIC.items() if data.startswith(magic)), None)


def open_checked(data: bytes, max_bytes: int, max_pixels: int) -> Image.Image:
    """Validate and decode an uploaded JPEG/PNG into an upright RGB image, or raise ImageRejected."""
    if not data:
        raise ImageRejected(400, "empty body: POST the JPEG or PNG image as the request body")
    if len(data) > max_bytes:
        raise ImageRejected(413, f"body is {len(data)} bytes; the limit is {max_bytes}")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageRejected(415, "unsupported body: only JPEG and PNG images are accepted")
    try:
        image = Image.open(io.BytesIO(data), formats=[fmt])  # reads the header only
    except Image.DecompressionBombError as exc:
        raise ImageRejected(413, f"image dimensions too large: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(400, f"unreadable {fmt} header: {exc}") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise ImageRejected(
            413, f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    try:
        image.load()
        # Cameras store rotation in EXIF; boxes must refer to the upright picture the edge sees.
        upright = ImageOps.exif_transpose(image)
        return upright.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise ImageRejected(413, f"image dimensions too large: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise ImageRejected(400, f"cannot decode {fmt} image: {exc}") from exc


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
