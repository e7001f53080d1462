"""Decoding photos: bytes or a path -> an upright RGB numpy array, with the limits checked first."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's own bomb guard would warn at ~89 Mpx; we check our own limit before decoding.
Image.MAX_IMAGE_PIXELS = None

DEFAULT_MAX_PIXELS = 40_000_000
MIN_SIDE = 20          # the smallest face the detector looks for (encoder.align.AlignConfig.min_detect_px)
# What Pillow's decoders raise on bytes that are cut short, corrupt or lie about themselves
# (seen by fuzzing: OSError "Truncated File Read", SyntaxError from a broken header, struct.error
# and IndexError from short chunks, ValueError and TypeError from impossible fields, EOFError,
# zlib.error, ZeroDivisionError from a zero resolution, MemoryError from an absurd palette).
PILLOW_FAILURES = (OSError, ValueError, SyntaxError, TypeError, EOFError, IndexError, KeyError, struct.error,
                   zlib.error, ZeroDivisionError, MemoryError, NotImplementedError)


class ImageError(ValueError):
    """The bytes are not a photo we can use (empty, undecodable, over the pixel limit)."""


def decode_image(data: bytes | str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = MIN_SIDE) -> np.ndarray:
    """Return an HxWx3 uint8 RGB array, rotated as its EXIF orientation says.

    The header is read first, so a 20000x20000 header is refused before any pixel is decoded.
    Any failure of the decoder (cut short, corrupt, unsupported, too many pixels, a side under
    `min_side`, too small to hold a face) is an ImageError with a message a person can act on.
    """
    if isinstance(data, (str, Path)):
        data = Path(data).read_bytes()
    if not data:
        raise ImageError("empty image: 0 bytes")
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(f"undecodable image: not a format Pillow reads ({len(data)} bytes)") from None
    except PILLOW_FAILURES as e:   # a known format's header, cut short or corrupt
        raise ImageError(f"corrupt or truncated image: its header cannot be read ({type(e).__name__}: {e})"[:300]) from None
    w, h = im.size
    if w * h > max_pixels:
        raise ImageError(f"image of {w}x{h} = {w * h} pixels is over the limit of {max_pixels}")
    if min(w, h) < max(min_side, 1):
        raise ImageError(f"image of {w}x{h} is too small to hold a face: at least {min_side} pixels a side")
    try:
        im = ImageOps.exif_transpose(im)
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except PILLOW_FAILURES as e:  # truncated or corrupt pixel data, or a broken EXIF block
        raise ImageError(f"corrupt or truncated image: its pixels cannot be decoded ({type(e).__name__}: {e})"[:300]) from None
    if arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < max(min_side, 1):
        raise ImageError(f"corrupt image: it decoded to an array of shape {arr.shape}")
    return np.ascontiguousarray(arr)
