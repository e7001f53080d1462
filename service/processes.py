"""The face models in worker processes of their own (Settings.worker_processes).

The face models' part of a call (decoding, the gates, detection and the encoder: service.pipeline.Eyes)
is mostly PyTorch, OpenCV and dlib, with Python between their calls, and that Python needs the
interpreter's lock: two model threads of one process got 1.75x one thread's Verify calls a second
on 2 cores, where two processes got 2.3x; and a 40-megapixel photo looked at in a thread of the
server held the lock for a fifth of its time, in waits of up to 5 ms that every door's request
then shared. So each model worker's looking runs in a process of its own (spawned, with its own
copy of the models), and the server keeps the rest: the stores, thresholds, decisions and audit.
Large photos get their own process, scheduled only on what the doors leave (service/admission.py).

A worker process that dies (killed, out of memory) fails the calls it held with UNAVAILABLE and is
replaced: the next call is answered by a fresh one.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from .admission import lowest_priority
from .errors import Unavailable
from .pipeline import Eyes, Look, LookRequest
from .settings import Settings

log = logging.getLogger("facegate.processes")

_eyes: Eyes | None = None            # in a worker process: its models


def _start(settings_json: str, idle: bool) -> None:
    """A worker process's set-up: its priority (`idle`: the lowest, service/admission.py), one
    intra-op thread (a process per worker already uses the cores side by side), its own encoder
    and gates."""
    global _eyes
    _end_with_parent()
    if idle:
        lowest_priority(0)
    import torch

    from encoder.embedder import Embedder

    from .device import resolve_device
    from .server import load_gates

    settings = Settings.model_validate_json(settings_json)
    torch.set_num_threads(1)
    device = resolve_device(settings.device)
    _eyes = Eyes(settings, Embedder.from_checkpoint(settings.checkpoint, device=device), load_gates(settings, device))


def _end_with_parent() -> None:
    """A worker process ends with the server, even one killed outright (SIGKILL): Linux sends it
    SIGTERM when the thread that started it ends (prctl PR_SET_PDEATHSIG)."""
    parent = os.getppid()
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)      # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError) as e:
        log.warning("a model worker process cannot follow the server's end (%s)", e)
    if os.getppid() != parent:           # the server ended before the request was made
        os._exit(0)


def _look(req: LookRequest) -> Look:
    look = _eyes.look(req)
    if look.alignment is not None:
        look.alignment.crop = None            # the server needs the face's findings, not its pixels
    return look


def _ready() -> int:
    time.sleep(0.2)                           # so that the start's calls spread over every process
    return os.getpid()


class LookProcesses:
    """`processes` worker processes answering Eyes.look; `look` blocks the calling thread (a model
    worker of service/admission.py) until its process has answered."""

    def __init__(self, settings: Settings, processes: int, idle: bool = False, name: str = "frames"):
        self.settings = settings
        self.processes = processes
        self.idle = idle
        self.name = name
        self._lock = threading.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start, initargs=(self.settings.model_dump_json(), self.idle))

    def start(self, timeout: float = 600) -> list[int]:
        """Start every process and wait until its models are loaded -> their process ids."""
        futures = [self._pool.submit(_ready) for _ in range(2 * self.processes)]
        pids = sorted({f.result(timeout) for f in futures})
        log.info("%d %s worker process(es) ready: %s", len(pids), self.name, pids)
        return pids

    def look(self, req: LookRequest) -> Look:
        pool = self._pool
        try:
            return pool.submit(_look, req).result()
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:        # the first call to see it replaces the pool
                    log.error("a %s worker process ended; starting new ones", self.name)
                    pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = self._new_pool()
                    for _ in range(self.processes):       # every process started now, not on demand
                        self._pool.submit(_ready)
            raise Unavailable("a model worker process ended while answering this request; retry") from None

    def pids(self) -> list[int]:
        """The worker processes alive now (the executor's own table: a replaced pool's new ones)."""
        return sorted(getattr(self._pool, "_processes", None) or {})

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
