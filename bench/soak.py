"""Soak: a long run at 80 % of the measured capacity, watching errors, latency and memory.

1. `facegate serve` on a fresh data folder (the shipped models), 20 DevTest people enrolled
   from one photo each.
2. Capacity: Verify in a closed loop with --cameras concurrent callers for --measure seconds
   (real 250x250 LFW photos: the card's owner or another enrolled person) -> requests/s.
3. The soak: Verify in an open loop at --load (0.8) x that rate for --seconds (1,800): each
   request leaves at its scheduled time whatever the ones before it do, and its latency is
   counted from that time (no coordinated omission). Every answer that is not OK is an error.
   The server's resident memory (VmRSS) is read every 10 s.
Memory growth = last RSS / RSS at the end of the first minute of the soak - 1 (the first minute
warms the allocator and the traced graphs up).

  .venv/bin/python bench/soak.py [--seconds 1800] [--load 0.8] [--plot docs/soak.png]
Prints one JSON object (capacity, rate, requests, errors, p50/p99 per minute and overall,
rss_mb at warm-up and at the end, growth); exits 1 on any error or a growth of 5 % or more.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serving import start_server  # noqa: E402
from facegate.v1 import facegate_pb2 as pb  # noqa: E402
from facegate.v1 import facegate_pb2_grpc as pb_grpc  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def people(lfw: Path, n: int, seed: int) -> list[tuple[str, bytes, bytes]]:
    """(name, enrolment photo, probe photo) of n DevTest people with 2+ photos."""
    names = sorted({p.split("/")[1] for line in (lfw / "pairs_devtest.tsv").read_text().splitlines()
                    for p in line.split("\t")[:2]})
    rows = []
    for name in random.Random(seed).sample(names, len(names)):
        photos = sorted((lfw / "images" / name).glob("*.jpg"))
        if len(photos) >= 2:
            rows.append((name, photos[0].read_bytes(), photos[1].read_bytes()))
        if len(rows) == n:
            return rows
    return rows


def requests_cycle(rows, seed: int):
    """Verify requests forever: the owner's probe, or another enrolled person's with that card."""
    rng = random.Random(seed)
    while True:
        i = rng.randrange(len(rows))
        j = i if rng.random() < 0.5 else rng.randrange(len(rows))
        yield pb.VerifyRequest(subject_id=rows[i][0], image=rows[j][2])


def measure_capacity(stub, rows, cameras: int, seconds: float) -> float:
    stop = time.time() + seconds
    done = Counter()

    def camera(k: int):
        for req in requests_cycle(rows, 1000 + k):
            if time.time() >= stop:
                return
            stub.Verify(req, timeout=30)
            done["n"] += 1

    with ThreadPoolExecutor(cameras) as ex:
        list(ex.map(camera, range(cameras)))
    return done["n"] / seconds


def soak(stub, pid: int, rows, rate: float, seconds: float) -> dict:
    lock = threading.Lock()
    latencies: list[tuple[float, float]] = []          # (scheduled time since start, seconds)
    codes: Counter = Counter()
    rss: list[tuple[float, float]] = []
    t0 = time.perf_counter()

    def finished(scheduled: float):
        def callback(fut):
            code = fut.code() if fut.exception() else grpc.StatusCode.OK
            with lock:
                codes[code.name] += 1
                latencies.append((scheduled - t0, time.perf_counter() - scheduled))
        return callback

    reqs = requests_cycle(rows, 7)
    k, next_rss, last_print = 0, 0.0, 0.0
    while True:
        scheduled = t0 + k / rate
        if scheduled - t0 >= seconds:
            break
        now = time.perf_counter()
        if scheduled > now:
            time.sleep(scheduled - now)
        stub.Verify.future(next(reqs), timeout=30).add_done_callback(finished(scheduled))
        k += 1
        if scheduled - t0 >= next_rss:
            rss.append((round(scheduled - t0, 1), rss_mb(pid)))
            next_rss += 10.0
        if scheduled - t0 - last_print >= 60:
            last_print = scheduled - t0
            print(f"soak: {last_print / 60:.0f} min, {k} requests, rss {rss[-1][1]:.0f} MB, {dict(codes)}",
                  file=sys.stderr, flush=True)
    deadline = time.time() + 60
    while sum(codes.values()) < k and time.time() < deadline:
        time.sleep(0.1)
    rss.append((round(time.perf_counter() - t0, 1), rss_mb(pid)))
    return {"sent": k, "codes": dict(codes), "latencies": latencies, "rss": rss}


def plot(result: dict, path: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = np.array(result["latencies"])
    rss = np.array(result["rss"])
    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    a.plot(lat[:, 0] / 60, lat[:, 1] * 1000, ",", alpha=0.3)
    a.set_ylabel("Verify latency, ms")
    a.set_yscale("log")
    a.set_title(f"Soak at {result['rate']:.1f} requests/s ({result['load']:.0%} of capacity)")
    b.plot(rss[:, 0] / 60, rss[:, 1])
    b.set_ylabel("server RSS, MB")
    b.set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=1800)
    ap.add_argument("--load", type=float, default=0.8, help="the share of the measured capacity")
    ap.add_argument("--cameras", type=int, default=2, help="closed-loop callers of the capacity measurement")
    ap.add_argument("--measure", type=float, default=60, help="seconds of the capacity measurement")
    ap.add_argument("--people", type=int, default=20)
    ap.add_argument("--lfw", default=os.path.join(os.environ.get("FACEGATE_DATA", ROOT.parent / "shared/data"),
                                                  "faces/lfw"))
    ap.add_argument("--plot", help="latency and memory over time, as a PNG")
    a = ap.parse_args()
    rows = people(Path(a.lfw), a.people, 0)
    with tempfile.TemporaryDirectory(prefix="fg-soak-") as tmp:
        proc, address = start_server(Path(tmp))
        try:
            with grpc.insecure_channel(address) as ch:
                stub = pb_grpc.FaceGateStub(ch)
                reqs = (pb.EnrollRequest(subject_id=n, image=img, photo_name=n) for n, img, _ in rows)
                enrolled = sum(r.status == pb.EnrollResponse.ACCEPTED for r in stub.Enroll(reqs, timeout=300))
                capacity = measure_capacity(stub, rows, a.cameras, a.measure)
                rate = a.load * capacity
                r = soak(stub, proc.pid, rows, rate, a.seconds)
        finally:
            proc.terminate()
            proc.wait(30)
    lat = np.array([x[1] for x in r["latencies"]]) * 1000
    rss = r["rss"]
    warm = next((mb for t, mb in rss if t >= 60), rss[0][1])
    minutes = {}
    for t, s in r["latencies"]:
        minutes.setdefault(int(t // 60), []).append(s * 1000)
    out = {"seconds": a.seconds, "enrolled": enrolled, "cameras_for_capacity": a.cameras,
           "capacity_rps": round(capacity, 2), "load": a.load, "rate": round(rate, 2), "requests": r["sent"],
           "answered": sum(r["codes"].values()), "codes": r["codes"],
           "errors": sum(v for c, v in r["codes"].items() if c != "OK"),
           "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1),
           "max_ms": round(float(lat.max()), 1),
           "p99_ms_by_minute": [round(float(np.percentile(v, 99)), 1) for _, v in sorted(minutes.items())],
           "rss_mb_start": round(rss[0][1], 1), "rss_mb_warm": round(warm, 1), "rss_mb_end": round(rss[-1][1], 1),
           "rss_mb_max": round(max(mb for _, mb in rss), 1),
           "rss_growth": round(rss[-1][1] / warm - 1, 4)}
    if a.plot:
        plot({**r, "rate": rate, "load": a.load}, a.plot)
        out["plot"] = a.plot
    print(json.dumps(out, indent=1))
    sys.exit(0 if out["errors"] == 0 and out["answered"] == out["requests"] and out["rss_growth"] < 0.05 else 1)


if __name__ == "__main__":
    main()
