"""Micro-batching (service/batching.py): concurrent callers share one call of the network, each
gets its own result, an error reaches every caller of its batch; and MTCNN batched gives each
image what it gives that image alone."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.batching import BatchedDetector, BatchedEncoder, MicroBatcher


def _together(n: int, fn, *args_per_call):
    """fn(*args) from n threads released at the same moment -> their results, in order."""
    start = threading.Barrier(n)

    def call(args):
        start.wait()
        return fn(*args)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(call, args_per_call))


def test_concurrent_callers_share_one_run_and_get_their_own_results():
    runs = []

    def run(items):
        runs.append(list(items))
        return [x * 10 for x in items]

    batcher = MicroBatcher(run, window=0.2, max_batch=4)
    out = _together(4, batcher, *[("k", i) for i in range(4)])
    assert out == [0, 10, 20, 30]
    assert [sorted(r) for r in runs] == [[0, 1, 2, 3]]          # one run: the batch filled before the window


def test_a_batch_runs_when_its_window_ends_and_keys_do_not_mix():
    runs = []
    batcher = MicroBatcher(lambda items: runs.append(len(items)) or list(items), window=0.05, max_batch=8)
    t0 = time.perf_counter()
    out = _together(3, batcher, ("a", 1), ("b", 2), ("a", 3))
    assert out == [1, 2, 3]
    assert sorted(runs) == [1, 2]                                # a: two items, b: one
    assert time.perf_counter() - t0 < 1.0


def test_an_error_reaches_every_caller_of_its_batch():
    def run(items):
        raise RuntimeError("network failed")

    batcher = MicroBatcher(run, window=0.2, max_batch=2)

    def call(x):
        try:
            return batcher("k", x)
        except RuntimeError as e:
            return str(e)

    assert _together(2, call, (1,), (2,)) == ["network failed", "network failed"]
    assert batcher.sizes == [2]


def test_max_batch_one_runs_each_call_alone():
    batcher = MicroBatcher(lambda items: [len(items)] * len(items), window=1.0, max_batch=1)
    assert _together(3, batcher, ("k", 0), ("k", 1), ("k", 2)) == [1, 1, 1]


class _Encoder:
    version = "v"

    def embed_crops(self, crops):
        return np.asarray(crops, np.float32).reshape(len(crops), -1)[:, :2]       # each crop its own row


def test_the_encoder_batched_gives_each_request_its_own_rows():
    enc = BatchedEncoder(_Encoder(), window=0.2, max_batch=3)
    crops = [np.full((1, 4, 4, 3), i, np.uint8) for i in range(3)]
    out = _together(3, enc.embed_crops, *[(c,) for c in crops])
    for i, o in enumerate(out):
        np.testing.assert_array_equal(o, [[i, i]])
    assert enc.batcher.sizes == [3] and enc.version == "v"
    assert enc.embed_crops(np.zeros((2, 4, 4, 3), np.uint8)).shape == (2, 2)     # a request's own batch


@pytest.mark.slow
def test_mtcnn_batched_finds_in_each_image_what_it_finds_alone(lfw):
    import torch
    from facenet_pytorch import MTCNN

    from encoder.images import decode_image

    torch.set_num_threads(1)
    mtcnn = MTCNN(keep_all=True, post_process=False)
    names = ["Abdullah_Gul/Abdullah_Gul_0013.jpg", "Reese_Witherspoon/Reese_Witherspoon_0003.jpg"]
    photos = [decode_image(lfw / "images" / n) for n in names] + [np.full((250, 250, 3), 128, np.uint8)]
    with torch.inference_mode():
        alone = [mtcnn.detect(p, landmarks=True) for p in photos]
        det = BatchedDetector(mtcnn, window=0.5, max_batch=3)
        together = _together(3, det.detect, *[(p,) for p in photos])
    assert det.batcher.sizes == [3]
    for (b1, p1, l1), (b2, p2, l2) in zip(alone, together):
        if b1 is None:
            assert b2 is None
            continue
        for x2, x1, tol in ((b2, b1, 1e-3), (p2, p1, 1e-5), (l2, l1, 1e-3)):
            np.testing.assert_allclose(np.asarray(x2, float), np.asarray(x1, float), atol=tol)
