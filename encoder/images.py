"""Decoding photos: bytes or a path -> an upright RGB numpy array, with the limits checked first."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's own bomb guard would warn at ~89 Mpx; we check our own limit before decoding.
Image.MAX_IMAGE_PIXELS = None

DEFAULT_MAX_PIXELS = 40_000_000


class ImageError(ValueError):
    """The bytes are not a photo we can use (empty, undecodable, over the pixel limit)."""


def decode_image(data: bytes | str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Return an HxWx3 uint8 RGB array, rotated as its EXIF orientation says.

    The header is read first, so a 20000x20000 header is refused before any pixel is decoded.
    """
    if isinstance(data, (str, Path)):
        data = Path(data).read_bytes()
    if not data:
        raise ImageError("empty image: 0 bytes")
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(f"undecodable image: not a format Pillow reads ({len(data)} bytes)") from None
    except (OSError, ValueError, SyntaxError) as e:   # a known format's header, cut short or corrupt
        raise ImageError(f"corrupt image header: {e}") from None
    w, h = im.size
    if w * h > max_pixels:
        raise ImageError(f"image of {w}x{h} = {w * h} pixels is over the limit of {max_pixels}")
    if w < 1 or h < 1:
        raise ImageError(f"image of {w}x{h} has no pixels")
    try:
        im = ImageOps.exif_transpose(im)
        im = im.convert("RGB")
        arr = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt pixel data
        raise ImageError(f"corrupt image data: {e}") from None
    return np.ascontiguousarray(arr)
