"""Crash durability: SIGKILL the server in the middle of enrollment streams, again and again.

Each cycle starts `facegate serve` on one data folder, streams a random batch of real face
photos (some enrolled before, most new) and kills the server with SIGKILL at a random moment of
the stream. A photo counts as acknowledged once its answer (ACCEPTED or ALREADY_ENROLLED) has
reached the client: CONTRACT.md says that answer is sent only once the template is durable.
After every restart the bench checks, before sending anything:
- lost: acknowledged photos (subject, photo hash) missing from the store (the SQLite file,
  read directly);
- the served index equals the store: GetStatus's subjects and templates against the store's
  own counts.
At the end every acknowledged photo is sent once more: each must be answered ALREADY_ENROLLED
(none lost, none added twice).

  .venv/bin/python bench/crash_enroll.py [--cycles 100] [--seed 0] [--lfw ../shared/data/faces/lfw]
Prints one JSON object; exits 1 if anything acknowledged was lost or index and store disagreed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serving import start_server  # noqa: E402
from facegate.v1 import facegate_pb2 as pb  # noqa: E402
from facegate.v1 import facegate_pb2_grpc as pb_grpc  # noqa: E402
from service.index_layout import current_index_dir  # noqa: E402

ACKNOWLEDGED = (pb.EnrollResponse.ACCEPTED, pb.EnrollResponse.ALREADY_ENROLLED)


def store_rows(data: Path) -> set[tuple[str, str]]:
    """(subject, photo sha256) of every template in the data folder's current store, read directly."""
    db = sqlite3.connect(f"file:{current_index_dir(data) / 'templates.sqlite'}?mode=ro", uri=True)
    try:
        return set(db.execute("SELECT subject, photo_sha256 FROM templates").fetchall())
    finally:
        db.close()


def people_photos(lfw: Path, people: int, per_person: int, seed: int) -> list[tuple[str, bytes]]:
    names = sorted({p.split("/")[1] for line in (lfw / "pairs_devtest.tsv").read_text().splitlines()
                    for p in line.split("\t")[:2]})
    rng = random.Random(seed)
    chosen = rng.sample([n for n in names if len(list((lfw / "images" / n).glob("*.jpg"))) >= 2], people)
    return [(n, p.read_bytes()) for n in chosen for p in sorted((lfw / "images" / n).glob("*.jpg"))[:per_person]]


def stream(address: str, batch: list[tuple[str, bytes]], acknowledged: set, kill_after: float,
           proc: subprocess.Popen) -> int:
    """Send the batch; SIGKILL the server kill_after seconds in; -> answers received."""
    killer = threading.Timer(kill_after, lambda: proc.send_signal(signal.SIGKILL))
    killer.start()
    got = 0
    try:
        with grpc.insecure_channel(address) as ch:
            reqs = (pb.EnrollRequest(subject_id=s, image=img, photo_name=str(i)) for i, (s, img) in enumerate(batch))
            for answer in pb_grpc.FaceGateStub(ch).Enroll(reqs, timeout=120):
                got += 1
                if answer.status in ACKNOWLEDGED:
                    s, img = batch[int(answer.photo_name)]
                    acknowledged.add((s, hashlib.sha256(img).hexdigest()))
    except grpc.RpcError:
        pass                      # the kill cut the stream: what was answered before it counts
    finally:
        killer.cancel()
        if proc.poll() is None:   # the stream ended before the timer: killed between two streams
            proc.send_signal(signal.SIGKILL)
    return got


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lfw", default=os.path.join(os.environ.get("FACEGATE_DATA", ROOT.parent / "shared/data"),
                                                  "faces/lfw"))
    ap.add_argument("--people", type=int, default=60)
    ap.add_argument("--batch", type=int, default=12, help="photos per stream")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    photos = people_photos(Path(a.lfw), a.people, 3, a.seed)
    acknowledged: set[tuple[str, str]] = set()
    report = {"cycles": a.cycles, "photos": len(photos), "streams_cut": 0, "answers": 0, "lost": 0,
              "index_store_mismatches": 0, "max_acknowledged": 0}
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="fg-crash-") as tmp:
        data = Path(tmp)
        for _ in tqdm(range(a.cycles), desc="SIGKILL cycles", unit="cycle", file=sys.stderr):
            proc, address = start_server(data)
            rows = store_rows(data)
            lost = acknowledged - rows
            report["lost"] = max(report["lost"], len(lost))
            with grpc.insecure_channel(address) as ch:
                st = pb_grpc.FaceGateStub(ch).GetStatus(pb.GetStatusRequest(), timeout=30)
            if (st.templates, st.subjects) != (len(rows), len({s for s, _ in rows})):
                report["index_store_mismatches"] += 1
            batch = rng.sample(photos, min(a.batch, len(photos)))
            answers = stream(address, batch, acknowledged, rng.uniform(0.05, 1.2), proc)
            report["answers"] += answers
            report["streams_cut"] += answers < len(batch)
            proc.wait(30)
            report["max_acknowledged"] = len(acknowledged)
        # the end: every acknowledged photo once more, each must be ALREADY_ENROLLED
        proc, address = start_server(data)
        by_hash = {(s, hashlib.sha256(img).hexdigest()): (s, img) for s, img in photos}
        resend = [by_hash[k] for k in sorted(acknowledged)]
        with grpc.insecure_channel(address) as ch:
            reqs = (pb.EnrollRequest(subject_id=s, image=img, photo_name=str(i)) for i, (s, img) in enumerate(resend))
            answers = list(pb_grpc.FaceGateStub(ch).Enroll(reqs, timeout=600))
        proc.terminate()
        proc.wait(30)
        report["lost"] = max(report["lost"], len(acknowledged - store_rows(data)))
    report["resent"] = len(resend)
    report["already_enrolled_on_resend"] = sum(x.status == pb.EnrollResponse.ALREADY_ENROLLED for x in answers)
    report["acknowledged"] = len(acknowledged)
    report["seconds"] = round(time.time() - t0, 1)
    report["seed"] = a.seed
    print(json.dumps(report, indent=1))
    ok = report["lost"] == 0 and report["index_store_mismatches"] == 0 and \
        report["already_enrolled_on_resend"] == report["resent"]
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
