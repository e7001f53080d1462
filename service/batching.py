"""Micro-batching: concurrent requests' face detection and encoding go through the networks together.

Each model worker runs one request's pipeline (service/pipeline.py), unchanged. Where it calls
the detector (MTCNN) or the encoder, it hands its input to a MicroBatcher instead: the first
caller of a batch waits up to `window` seconds for others (at most `max_batch` in all), then runs
them as one call of the network and gives each caller its own result. MTCNN takes a batch of
images of one size only, so detection batches are grouped by the (searched) image's shape.

A batch amortises what a call of a network costs whatever its size: PyTorch's per-operator
overhead and, in MTCNN, its Python between the three networks and the per-candidate resampling.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Batch:
    items: list = field(default_factory=list)
    closed: bool = False
    full: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    results: list | None = None
    error: BaseException | None = None


class MicroBatcher:
    """`run(items) -> results` (one result per item, in order), called for batches of concurrent
    callers of `__call__(key, item)` with the same key."""

    def __init__(self, run, window: float, max_batch: int):
        self.run = run
        self.window = window
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._open: dict = {}
        self.sizes: list[int] = []        # the size of each batch run (for measurement)

    def __call__(self, key, item):
        if self.max_batch <= 1:
            return self.run([item])[0]
        with self._lock:
            batch = self._open.get(key)
            leader = batch is None
            if leader:
                batch = self._open[key] = _Batch()
            i = len(batch.items)
            batch.items.append(item)
            if len(batch.items) >= self.max_batch:
                self._close(key, batch)
        if not leader:
            batch.done.wait()
        else:
            batch.full.wait(self.window)
            with self._lock:
                self._close(key, batch)
            try:
                batch.results = self.run(batch.items)
            except BaseException as e:          # every caller of the batch gets the error
                batch.error = e
            finally:
                if len(self.sizes) < 100_000:
                    self.sizes.append(len(batch.items))
                batch.done.set()
        if batch.error is not None:
            raise batch.error
        return batch.results[i]

    def _close(self, key, batch: _Batch):
        if not batch.closed:
            batch.closed = True
            if self._open.get(key) is batch:
                del self._open[key]
            batch.full.set()


class BatchedDetector:
    """Stands in for facenet-pytorch's MTCNN in encoder.align.FaceAligner: detect() of one image
    joins the other workers' images of the same size in one batch."""

    def __init__(self, mtcnn, window: float, max_batch: int):
        self.mtcnn = mtcnn
        self.batcher = MicroBatcher(self._run, window, max_batch)

    def _run(self, images: list[np.ndarray]):
        boxes, probs, points = self.mtcnn.detect(np.stack(images), landmarks=True)
        # as MTCNN answers one image: float arrays, or (None, [None], None) where it found no face
        return [(b, p, l) if b is None else (np.asarray(b, np.float32), np.asarray(p, np.float32),
                                             np.asarray(l, np.float32))
                for b, p, l in zip(boxes, probs, points)]

    def detect(self, img, landmarks: bool = True):
        img = np.asarray(img)
        if img.ndim != 3 or not landmarks:
            return self.mtcnn.detect(img, landmarks=landmarks)
        boxes, probs, points = self.batcher(img.shape, img)
        return boxes, probs, points

    def __getattr__(self, name):
        return getattr(self.mtcnn, name)


class BatchedEncoder:
    """Wraps encoder.embedder.Embedder: embed_crops() of one request's crops joins the other
    workers' in one batch; everything else is the embedder's own."""

    def __init__(self, embedder, window: float, max_batch: int):
        self.embedder = embedder
        self.batcher = MicroBatcher(self._run, window, max_batch)

    def _run(self, crops: list[np.ndarray]):
        counts = [len(c) for c in crops]
        out = self.embedder.embed_crops(np.concatenate(crops))
        return np.split(out, np.cumsum(counts)[:-1])

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        crops = np.asarray(crops)
        if len(crops) != 1:                     # a request's own batch (Cluster) runs as it is
            return self.embedder.embed_crops(crops)
        return self.batcher(crops.shape[1:], crops)

    def __getattr__(self, name):
        return getattr(self.embedder, name)


def batch_models(embedder, window_ms: float, max_batch: int):
    """The embedder with its detector and encoder batched across threads (max_batch <= 1: as it is).
    Batching the encoder alone was measured too, and saved nothing (service/settings.py)."""
    if max_batch <= 1:
        return embedder
    window = window_ms / 1000.0
    embedder.aligner.mtcnn = BatchedDetector(embedder.aligner.mtcnn, window, max_batch)
    return BatchedEncoder(embedder, window, max_batch)
