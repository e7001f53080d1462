"""Overload that behaves: a bounded queue in front of the model workers, and no model time spent
on a request whose caller has already given up.

- A camera request (Verify, Identify, Cluster) that arrives while `workers + max_queue` requests
  are already running or waiting is answered RESOURCE_EXHAUSTED at once ("the server is busy"):
  a kiosk then retries or falls back to the card, instead of waiting behind a queue it cannot see.
- When a worker picks a request up, it drops one whose deadline has passed, or is nearer than
  the time the models have been taking for that RPC (an exponential moving average): the caller
  would be gone before the answer is; it gets DEADLINE_EXCEEDED and the models never run.
- A request whose caller cancelled it (or whose deadline passed at the client) while it waited
  leaves the queue without running (asyncio cancels the executor's pending future).
- Doors first: a Verify or Identify photo larger than any camera frame (Settings.large_photo_pixels,
  a 4K frame's 8.3 megapixels) is answered by a worker of its own, behind a queue of its own,
  and looked at at the lowest CPU priority (`lowest_priority`: SCHED_IDLE): by a worker process
  of its own (service/processes.py), or, without worker processes, in that worker's thread. It
  takes only the cores the doors' frames leave, and a stream of large uploads neither holds a
  frame behind it in the queue nor shares a core or the interpreter's lock with one.
- Enroll photos wait for a worker rather than fail: a stream has at most one photo per worker
  running (service/servicer.py) and is not a camera at a door; a refusal would only make it
  resend the same photo. Cheap
  calls (GetStatus, DeleteSubject) are not bounded either.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from .errors import FacegateError


log = logging.getLogger("facegate.admission")

def lowest_priority(tid: int) -> None:
    """Schedule thread (or process) `tid` (0: the caller) only when no other task wants its core:
    SCHED_IDLE where Linux offers it, else the highest niceness. 2 cameras beside a 40-megapixel
    photo twice a second, in worker processes: their p99 +3 to +21 % with SCHED_IDLE, +40 % at nice
    19; in the server's threads, at nice 19: +29 to +39 %, on the frames' workers +53 to +60 %."""
    try:
        if hasattr(os, "SCHED_IDLE"):
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        else:
            os.setpriority(os.PRIO_PROCESS, tid, 19)
    except OSError as e:
        log.warning("a model worker's CPU priority cannot be lowered (%s): it runs at the server's", e)


class Busy(FacegateError):
    code = "RESOURCE_EXHAUSTED"


class DeadlineTooNear(FacegateError):
    code = "DEADLINE_EXCEEDED"


def _one_search_thread() -> None:
    """Each model worker searches the template index on its own thread: the workers already run
    side by side, and a FAISS search split over every core waits for the busy one (a flat search of
    50k templates: about 1 ms on one thread, 40 ms on two of a loaded 2-core machine;
    bench/index_scale.py)."""
    import faiss

    faiss.omp_set_num_threads(1)


def _start_worker(idle: bool) -> None:
    """A model worker thread's set-up: one FAISS search thread; `idle`: the lowest priority for this
    thread alone (Linux: a thread is its own scheduling entity)."""
    _one_search_thread()
    if idle:
        lowest_priority(threading.get_native_id())


class ModelQueue:
    """`workers` threads running the pipeline, with at most `max_queue` requests waiting for one."""

    EWMA = 0.2           # weight of the newest run in the moving average of run times

    def __init__(self, workers: int, max_queue: int, thread_name_prefix: str = "facegate-model", idle: bool = False,
                 prefetch: int = 0):
        """`prefetch`: threads beyond `workers` that hand a request on to the worker processes
        (service/processes.py) while each still answers its last one: a process that answers
        then finds its next request waiting in its pipe, instead of idling until a server thread
        wakes to send it (1,000 ID photos enrolled: the cores busy 1.78 of 2 without, 1.89 with). Such a
        request has passed its deadline check; the admission bound stays `workers + max_queue`."""
        self.workers = workers
        self.max_queue = max_queue
        self.executor = ThreadPoolExecutor(workers + prefetch, thread_name_prefix=thread_name_prefix,
                                           initializer=functools.partial(_start_worker, idle))
        self._lock = threading.Lock()
        self._admitted = 0                    # bounded requests running or waiting
        self._run_seconds: dict[str, float] = {}

    @property
    def admitted(self) -> int:
        return self._admitted

    def expected_seconds(self, name: str) -> float:
        """What a run of `name` has been taking lately (0 before the first)."""
        return self._run_seconds.get(name, 0.0)

    async def run(self, fn, *args, name: str = "", deadline_left: float | None = None, bounded: bool = True):
        """fn(*args) in a worker thread. `deadline_left`: the caller's remaining seconds now (None:
        no deadline). `bounded`: refused with Busy when the queue is full (else it waits)."""
        deadline = None if deadline_left is None else time.monotonic() + deadline_left
        if bounded:
            with self._lock:
                if self._admitted >= self.workers + self.max_queue:
                    raise Busy(f"the server is busy: {self.workers} requests are being answered and "
                                f"{self.max_queue} are waiting; retry shortly")
                self._admitted += 1
        try:
            future: Future = self.executor.submit(self._work, fn, args, name, deadline)
        except BaseException:
            if bounded:
                self._release()
            raise
        if bounded:                            # released when the work ends, or leaves the queue unrun
            future.add_done_callback(lambda _: self._release())
        return await asyncio.wrap_future(future)

    def _release(self):
        with self._lock:
            self._admitted -= 1

    def _work(self, fn, args, name: str, deadline: float | None):
        if deadline is not None:
            left = deadline - time.monotonic()
            need = self.expected_seconds(name)
            if left <= need:
                raise DeadlineTooNear(
                    f"the request's deadline {'passed' if left <= 0 else 'is too near'} when a worker took it up "
                    f"({left * 1000:.0f} ms left, {name or 'a request'} takes about {need * 1000:.0f} ms): the server "
                    f"is busy; not run")
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            took = time.perf_counter() - t0
            with self._lock:
                old = self._run_seconds.get(name)
                self._run_seconds[name] = took if old is None else (1 - self.EWMA) * old + self.EWMA * took

    def shutdown(self):
        self.executor.shutdown(wait=False, cancel_futures=True)
