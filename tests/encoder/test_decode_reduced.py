"""decode_reduced: a large photo is reduced while it is decoded (JPEG by libjpeg's DCT scaling, any
format by a whole-factor box filter), upright, with decode_image's limits checked on the header."""
import io
import time

import numpy as np
import pytest
from PIL import Image

from encoder.images import REDUCED_SIDE, ImageError, decode_image, decode_reduced


def _bytes(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kw)
    return buf.getvalue()


def _quadrants(w: int, h: int) -> np.ndarray:
    """Four flat quadrants, red / green over blue / white: where each lands shows the rotation."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[: h // 2, : w // 2] = (255, 0, 0)
    arr[: h // 2, w // 2:] = (0, 255, 0)
    arr[h // 2:, : w // 2] = (0, 0, 255)
    arr[h // 2:, w // 2:] = (255, 255, 255)
    return arr


def _corner_colours(out: np.ndarray) -> list[tuple[int, ...]]:
    h, w = out.shape[:2]
    at = [(h // 4, w // 4), (h // 4, 3 * w // 4), (3 * h // 4, w // 4), (3 * h // 4, 3 * w // 4)]
    return [tuple(int(round(c / 255)) * 255 for c in out[y, x]) for y, x in at]


def test_a_40_megapixel_jpeg_is_decoded_at_a_quarter():
    arr = _quadrants(7740, 5160)                                  # 39.9 Mpx
    d = decode_reduced(_bytes(arr, "JPEG", quality=90))
    assert d.image.shape == (1290, 1935, 3) and d.factor == 4 and d.size == (7740, 5160)
    assert REDUCED_SIDE <= max(d.image.shape) < 2 * REDUCED_SIDE
    assert _corner_colours(d.image) == [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]


def test_a_large_jpeg_is_rotated_as_its_exif_says_after_reduction():
    arr = _quadrants(6000, 3000)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6                                              # display rotated 90 degrees clockwise
    d = decode_reduced(_bytes(arr, "JPEG", quality=90, exif=exif.tobytes()))
    assert d.image.shape == (1500, 750, 3) and d.factor == 4
    # clockwise: the stored left half (red over blue) becomes the top half (blue left, red right)
    assert _corner_colours(d.image) == [(0, 0, 255), (255, 0, 0), (255, 255, 255), (0, 255, 0)]


def test_a_large_png_is_reduced_by_a_whole_factor():
    arr = _quadrants(3000, 2000)
    d = decode_reduced(_bytes(arr, "PNG"))
    assert d.image.shape == (1000, 1500, 3) and d.factor == 2
    np.testing.assert_array_equal(d.image, arr[::2, ::2])        # flat quadrants: the box filter keeps them exact


def test_a_photo_under_twice_the_side_is_decoded_as_it_is():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (1000, 2500, 3), dtype=np.uint8)
    data = _bytes(arr, "JPEG", quality=90)
    d = decode_reduced(data)
    assert d.factor == 1
    np.testing.assert_array_equal(d.image, decode_image(data))


def test_the_limits_are_checked_on_the_header_before_decoding():
    data = _bytes(_quadrants(4000, 4000), "JPEG")
    with pytest.raises(ImageError, match="over the limit"):
        decode_reduced(data, max_pixels=10_000_000)
    with pytest.raises(ImageError, match="empty"):
        decode_reduced(b"")
    with pytest.raises(ImageError, match="truncated"):
        decode_reduced(data[: len(data) // 3])


@pytest.mark.slow
def test_reduced_decoding_of_a_40_megapixel_jpeg_is_several_times_faster():
    rng = np.random.default_rng(1)
    arr = np.kron(rng.integers(0, 256, (645, 430, 3), dtype=np.uint8), np.ones((12, 12, 1), np.uint8))
    data = _bytes(arr, "JPEG", quality=85)                        # 5160 x 7740, detail everywhere

    def best(f):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            f(data)
            times.append(time.perf_counter() - t0)
        return min(times)

    full, reduced = best(decode_image), best(decode_reduced)
    assert reduced < full / 2, (reduced, full)
