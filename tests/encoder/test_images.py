"""decode_image: bytes or a path -> upright HxWx3 uint8, limits checked before any pixel is decoded."""
import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from encoder.images import DEFAULT_MAX_PIXELS, ImageError, decode_image


def _png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def _pattern(w: int, h: int) -> np.ndarray:
    """An HxWx3 image of 10x10 blocks, each block its own colour: no symmetry at all."""
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0],
                        [0, 255, 255], [255, 0, 255], [255, 255, 255], [0, 0, 0]], np.uint8)
    arr = np.zeros((h, w, 3), np.uint8)
    for by in range(h // 10):
        for bx in range(w // 10):
            arr[by * 10:(by + 1) * 10, bx * 10:(bx + 1) * 10] = colours[(by * (w // 10) + bx) % len(colours)]
    return arr


def test_png_decodes_to_hxwx3_uint8(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)   # H=5, W=7
    data = _png_bytes(Image.fromarray(arr))
    out = decode_image(data, min_side=5)
    assert out.shape == (5, 7, 3)
    assert out.dtype == np.uint8
    assert out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, arr)
    # the same from a path, given as str or Path
    p = tmp_path / "face.png"
    p.write_bytes(data)
    np.testing.assert_array_equal(decode_image(p, min_side=5), arr)
    np.testing.assert_array_equal(decode_image(str(p), min_side=5), arr)


def test_grey_and_rgba_become_rgb():
    grey = np.array([[0, 100], [200, 255]], np.uint8)
    out = decode_image(_png_bytes(Image.fromarray(grey, "L")), min_side=1)
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 10, 255
    out = decode_image(_png_bytes(Image.fromarray(rgba, "RGBA")), min_side=1)
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out[..., 0], 10)


def test_empty_bytes():
    with pytest.raises(ImageError, match="empty"):
        decode_image(b"")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        decode_image(p)


def test_noise_bytes():
    noise = np.random.default_rng(1).bytes(4096)
    with pytest.raises(ImageError, match="undecodable"):
        decode_image(noise)


def test_image_error_is_a_value_error():
    assert issubclass(ImageError, ValueError)


def _patch_png_size(data: bytes, w: int, h: int) -> bytes:
    # PNG: 8-byte signature, then the IHDR chunk: length(4) "IHDR"(4) width(4) height(4) ... crc(4).
    assert data[12:16] == b"IHDR"
    ihdr = bytearray(data[12:29])                 # chunk type + 13 bytes of data
    ihdr[4:12] = struct.pack(">II", w, h)
    crc = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return data[:12] + bytes(ihdr) + crc + data[33:]


def test_huge_header_is_refused_before_decoding():
    small = _png_bytes(Image.new("1", (1, 1)))
    bomb = _patch_png_size(small, 20000, 20000)
    # the patched header is a valid one: Pillow reads the new size
    assert Image.open(io.BytesIO(bomb)).size == (20000, 20000)
    start = time.perf_counter()
    with pytest.raises(ImageError, match="over the limit") as e:
        decode_image(bomb)
    assert time.perf_counter() - start < 2.0
    assert "400000000" in str(e.value) and str(DEFAULT_MAX_PIXELS) in str(e.value)


def test_max_pixels_limit_is_inclusive():
    data = _png_bytes(Image.new("RGB", (20, 20)))
    assert decode_image(data, max_pixels=400).shape == (20, 20, 3)
    with pytest.raises(ImageError, match="over the limit of 399"):
        decode_image(data, max_pixels=399)


@pytest.mark.parametrize("size", [(1, 1), (19, 300), (300, 19)])
def test_a_photo_too_small_to_hold_a_face_is_refused(size):
    with pytest.raises(ImageError, match="too small to hold a face"):
        decode_image(_png_bytes(Image.new("RGB", size)))
    assert decode_image(_png_bytes(Image.new("RGB", (20, 20)))).shape == (20, 20, 3)


def test_truncated_jpeg():
    arr = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _jpeg_bytes(Image.fromarray(arr), quality=90)
    with pytest.raises(ImageError, match="corrupt"):
        decode_image(data[: len(data) // 2])


def test_truncated_png():
    arr = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _png_bytes(Image.fromarray(arr))
    with pytest.raises(ImageError):
        decode_image(data[: len(data) // 2])


def _with_orientation(img: Image.Image, orientation: int):
    exif = img.getexif()
    exif[0x0112] = orientation
    return exif.tobytes()


def test_jpeg_exif_orientation_6_is_rotated_clockwise():
    # stored 40 wide x 20 high; orientation 6 = rotate 90 deg clockwise to display -> 20 wide x 40 high
    arr = _pattern(40, 20)
    img = Image.fromarray(arr)
    data = _jpeg_bytes(img, quality=95, subsampling=0, exif=_with_orientation(img, 6))
    assert Image.open(io.BytesIO(data)).getexif()[0x0112] == 6
    out = decode_image(data)
    assert out.shape == (40, 20, 3)
    cw = np.rot90(arr, k=-1)          # clockwise: the stored top-left pixel goes to the top-right
    ccw = np.rot90(arr, k=1)
    assert (cw[0, -1] == arr[0, 0]).all()
    err_cw = np.abs(out.astype(int) - cw).mean()
    err_ccw = np.abs(out.astype(int) - ccw).mean()
    assert err_cw < 8, err_cw          # JPEG is lossy, but only a little at quality 95, 4:4:4
    assert err_ccw > 40, err_ccw
    # the centre of every 10x10 block has its colour within JPEG error
    centres = np.abs(out[5::10, 5::10].astype(int) - cw[5::10, 5::10]).max()
    assert centres <= 12


def test_png_exif_orientation_6_is_exact():
    arr = _pattern(40, 20)
    img = Image.fromarray(arr)
    out = decode_image(_png_bytes(img, exif=_with_orientation(img, 6)))
    np.testing.assert_array_equal(out, np.rot90(arr, k=-1))


def test_orientation_1_is_not_rotated():
    arr = _pattern(40, 20)
    img = Image.fromarray(arr)
    out = decode_image(_png_bytes(img, exif=_with_orientation(img, 1)))
    np.testing.assert_array_equal(out, arr)
