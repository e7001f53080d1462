"""Decoding photos: bytes or a path -> an upright RGB numpy array, with the limits checked first."""
from __future__ import annotations

import io
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's own bomb guard would warn at ~89 Mpx; we check our own limit before decoding.
Image.MAX_IMAGE_PIXELS = None

DEFAULT_MAX_PIXELS = 40_000_000
# decode_reduced: a photo whose long side is at least twice this is decoded smaller, its long side
# kept at or above it (so it ends in [REDUCED_SIDE, 2 x REDUCED_SIDE)). 1280 is the side the
# detector searches a large photo at anyway (encoder.align.AlignConfig.detect_max_side), so the
# detector sees what it saw before; the face's chip is read from these pixels, and a face that
# fills a tenth of the photo keeps at least 128 px, about the 150 px chip's face.
REDUCED_SIDE = 1280
MIN_SIDE = 20          # the smallest face the detector looks for (encoder.align.AlignConfig.min_detect_px)
# What Pillow's decoders raise on bytes that are cut short, corrupt or lie about themselves
# (seen by fuzzing: OSError "Truncated File Read", SyntaxError from a broken header, struct.error
# and IndexError from short chunks, ValueError and TypeError from impossible fields, EOFError,
# zlib.error, ZeroDivisionError from a zero resolution, MemoryError from an absurd palette).
PILLOW_FAILURES = (OSError, ValueError, SyntaxError, TypeError, EOFError, IndexError, KeyError, struct.error,
                   zlib.error, ZeroDivisionError, MemoryError, NotImplementedError)


class ImageError(ValueError):
    """The bytes are not a photo we can use (empty, undecodable, over the pixel limit)."""


@dataclass(frozen=True)
class Decoded:
    image: np.ndarray          # HxWx3 uint8 RGB, upright
    size: tuple[int, int]      # the photo's own (width, height), as its header says, before any rotation
    factor: int = 1            # the photo was decoded at 1/factor of its size (1: full size)


def _open(data: bytes | str | Path, max_pixels: int, min_side: int) -> tuple[Image.Image, bytes]:
    """The photo opened (its header read, no pixel decoded yet), with the limits checked."""
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
    return im, data


def _pixels(im: Image.Image, min_side: int, reduce_to: int | None = None) -> np.ndarray:
    """Decode (reduced: by a whole factor, area-averaged, while the long side stays >= reduce_to),
    rotate as EXIF says, RGB."""
    try:
        if reduce_to:
            long_side = max(im.size)
            if im.format == "JPEG" and long_side >= 2 * reduce_to:
                # libjpeg's DCT scaling (1/2, 1/4, 1/8): the smaller scales skip most of the
                # inverse transform's work; draft picks the smallest that keeps both sides >= the size asked
                scale = long_side / reduce_to
                im.draft("RGB", (math.ceil(im.size[0] / scale), math.ceil(im.size[1] / scale)))
            f = max(im.size) // reduce_to
            if f >= 2:             # other formats, or a JPEG still over twice the side: a box (area) filter
                im = im.reduce(f)
        im = ImageOps.exif_transpose(im)
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except PILLOW_FAILURES as e:  # truncated or corrupt pixel data, or a broken EXIF block
        raise ImageError(f"corrupt or truncated image: its pixels cannot be decoded ({type(e).__name__}: {e})"[:300]) from None
    if arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < max(min_side, 1):
        raise ImageError(f"corrupt image: it decoded to an array of shape {arr.shape}")
    return np.ascontiguousarray(arr)


def photo_pixels(data: bytes) -> int:
    """The pixels a photo's header announces (width x height), nothing decoded; 0 where no
    header can be read (the decoder then says what is wrong)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
        return w * h
    except Exception:          # noqa: BLE001 - any unreadable header: the decoder's to explain
        return 0


def decode_image(data: bytes | str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = MIN_SIDE) -> np.ndarray:
    """Return an HxWx3 uint8 RGB array, rotated as its EXIF orientation says, at full size.

    The header is read first, so a 20000x20000 header is refused before any pixel is decoded.
    Any failure of the decoder (cut short, corrupt, unsupported, too many pixels, a side under
    `min_side`, too small to hold a face) is an ImageError with a message a person can act on.
    """
    im, _ = _open(data, max_pixels, min_side)
    return _pixels(im, min_side)


def decode_reduced(data: bytes | str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = MIN_SIDE,
                   reduce_to: int = REDUCED_SIDE) -> Decoded:
    """As decode_image, but a large photo is reduced while it is decoded: a JPEG at 1/2, 1/4 or
    1/8 scale by libjpeg itself (a 6300x6300 JPEG: 0.7 s -> 0.06 s), any format then by a whole
    factor with a box filter, so that the long side ends in [reduce_to, 2 x reduce_to). A photo
    under twice `reduce_to` is decoded as it is. The limits are those of decode_image, checked on
    the header's size."""
    im, _ = _open(data, max_pixels, min_side)
    size = im.size
    arr = _pixels(im, min_side, reduce_to)
    factor = max(size) / max(arr.shape[:2])
    return Decoded(arr, size, max(1, int(round(factor))))
