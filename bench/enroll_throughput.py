"""Enrollment throughput: photos per second of `facegate enroll` against a real `facegate serve`,
and of face_recognition's own batch (load_image_file + face_encodings in a Pool of 2 processes)
on the same photos, on the same machine, in the same run.

1. An ID-photo folder DIR/<subject>/<photo> of --photos LFW photos (--per-person photos of each of
   photos / per-person people with that many, drawn with --seed), as symbolic links in a temporary folder.
2. facegate: `facegate serve` on a fresh data folder (its models loaded before the clock starts),
   then the real command `facegate enroll DIR --server A --json`, timed from its start to its exit
   (its own progress bar on stderr). The server is stopped before step 3.
3. face_recognition: a Pool of --processes (2) workers, each warmed up on one photo before the clock
   starts, mapping load_image_file + face_encodings (its defaults: HOG detector, 1 jitter) over the
   same photos, with a progress bar.

  .venv/bin/python bench/enroll_throughput.py [--photos 1000] [--per-person 2] [--processes 2]
Prints one JSON object: both photos/s, their ratio (facegate / face_recognition), and what each
made of the photos (accepted / rejected, encoded / no face).
Needs face_recognition (`./dev teacher`: the training-time teacher's extra).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import psutil
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serving import start_server  # noqa: E402


def id_photo_folder(lfw_images: Path, photos: int, per_person: int, seed: int, out: Path) -> list[Path]:
    """out/<person>/<photo> -> LFW's photo (a symbolic link), for photos // per_person people drawn
    among those with at least per_person photos -> the links, in order."""
    people = sorted(d for d in lfw_images.iterdir() if d.is_dir() and len(list(d.glob("*.jpg"))) >= per_person)
    need = photos // per_person
    if need > len(people):
        raise SystemExit(f"only {len(people)} LFW people have {per_person}+ photos; {need} are needed")
    links = []
    for person in sorted(random.Random(seed).sample(people, need)):
        (out / person.name).mkdir(parents=True)
        for src in sorted(person.glob("*.jpg"))[:per_person]:
            link = out / person.name / src.name
            link.symlink_to(src.resolve())
            links.append(link)
    return links


def cpu_seconds(pid: int) -> float:
    """The user + system CPU time a process and its children alive now (the server's model worker
    processes) have used so far."""
    proc = psutil.Process(pid)
    return sum(t.user + t.system for t in (p.cpu_times() for p in [proc, *proc.children(recursive=True)]))


def facegate_enroll(folder: Path, n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="fg-enroll-data-") as data:
        proc, address = start_server(Path(data))
        try:
            cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "service.cli", "enroll", str(folder), "--server", address,
                                "--json", "--timeout", "3600"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
            seconds = time.perf_counter() - t0
            server_cpu = cpu_seconds(proc.pid) - cpu0
        finally:
            proc.terminate()
            proc.wait(60)
    if r.returncode != 0:
        raise SystemExit(f"facegate enroll failed ({r.returncode}): {r.stdout}")
    out = json.loads(r.stdout)
    return {"seconds": round(seconds, 2), "photos_per_s": round(n / seconds, 3), "accepted": out["accepted"],
            "already_enrolled": out["already_enrolled"], "rejected": len(out["rejected"]),
            # the server's CPU time per photo, and how many cores it kept busy on average
            "server_cpu_s_per_photo": round(server_cpu / n, 3), "server_cores_busy": round(server_cpu / seconds, 2)}


def _warm(photo: str):
    import warnings

    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    _encode(photo)


def _encode(photo: str) -> int:
    """The number of faces face_recognition encodes in the photo (0: none found)."""
    import face_recognition

    return len(face_recognition.face_encodings(face_recognition.load_image_file(photo)))


def face_recognition_batch(photos: list[Path], processes: int) -> dict:
    paths = [str(p) for p in photos]
    with Pool(processes, initializer=_warm, initargs=(paths[0],)) as pool:
        pool.map(_warm, [paths[0]] * processes)       # every worker imported and ran once: the clock starts now
        t0 = time.perf_counter()
        faces = list(tqdm(pool.imap(_encode, paths, chunksize=4), total=len(paths), desc="face_recognition",
                          unit="photo", file=sys.stderr))
        seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 2), "photos_per_s": round(len(paths) / seconds, 3), "processes": processes,
            "encoded": sum(f > 0 for f in faces), "no_face": sum(f == 0 for f in faces)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--per-person", type=int, default=2, help="photos per subject (1000 = 500 people x 2)")
    ap.add_argument("--processes", type=int, default=2, help="face_recognition's Pool size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lfw", default=os.path.join(os.environ.get("FACEGATE_DATA", ROOT.parent / "shared/data"),
                                                  "faces/lfw"))
    a = ap.parse_args()
    if a.photos < 1 or a.per_person < 1 or a.processes < 1:
        raise SystemExit("--photos, --per-person and --processes must be at least 1")
    if importlib.util.find_spec("face_recognition") is None:
        raise SystemExit("face_recognition is not installed: `./dev teacher` installs it")
    with tempfile.TemporaryDirectory(prefix="fg-id-photos-") as tmp:
        folder = Path(tmp) / "photos"
        photos = id_photo_folder(Path(a.lfw) / "images", a.photos, a.per_person, a.seed, folder)
        print(f"{len(photos)} ID photos of {len(photos) // a.per_person} people in {folder}", file=sys.stderr)
        fg = facegate_enroll(folder, len(photos))
        fr = face_recognition_batch(photos, a.processes)
    print(json.dumps({"photos": len(photos), "people": len(photos) // a.per_person, "cpus": os.cpu_count(),
                      "facegate": fg, "face_recognition": fr,
                      "ratio": round(fg["photos_per_s"] / fr["photos_per_s"], 3)}, indent=1))


if __name__ == "__main__":
    main()
