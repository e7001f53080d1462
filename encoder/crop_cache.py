"""A cache of aligned face crops (and, optionally, the teacher's embeddings) for training.

Detection is the slow part of training on CPU; it is done once. The cache is a folder:
  shards/NNNNN.npz   one per block of photos, written atomically: a killed build resumes
  crops.npy          N x S x S x 3 uint8 (S = the aligner's crop size)
  teacher.npy        N x 128 float32, L2-normalised (only when built with a teacher)
  photos.tsv         path, identity, reason of each cached photo, in row order
  manifest.json      what the cache was built from (a key over photo list + configs)
Photos with no face found are left out (listed in skipped.tsv).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .align import AlignConfig, FaceAligner
from .face_folders import Photo
from .images import ImageError, decode_image

SHARD = 256
CACHE_FORMAT = 2  # 2: the face is chosen by its part inside the photo (align.choose_face)


def cache_key(photos: list[Photo], config: AlignConfig, teacher: bool) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"format": CACHE_FORMAT, "align": asdict(config), "teacher": teacher}).encode())
    for p in photos:
        h.update(f"{p.path}\t{p.identity}\n".encode())
    return h.hexdigest()[:16]


_worker: dict = {}


def _init_worker(config: AlignConfig, teacher: bool):
    import torch

    torch.set_num_threads(1)
    _worker["aligner"] = FaceAligner(config)
    if teacher:
        from .teacher import DlibTeacher

        _worker["teacher"] = DlibTeacher()


def _build_shard(job):
    shard_path, photos = job
    aligner, teacher = _worker["aligner"], _worker.get("teacher")
    crops, embs, rows, skipped = [], [], [], []
    for p in photos:
        try:
            img = decode_image(p.path)
        except (ImageError, OSError) as e:
            skipped.append((p.path, f"UNREADABLE {e}"))
            continue
        a = aligner.align(img)
        if a.crop is None:
            skipped.append((p.path, a.outcome))
            continue
        crops.append(a.crop)
        rows.append((p.path, p.identity, a.outcome))
        if teacher is not None:
            embs.append(teacher.embed(img, a.box))
    s = aligner.config.crop_size
    tmp = shard_path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        crops=np.stack(crops) if crops else np.zeros((0, s, s, 3), np.uint8),
        teacher=np.stack(embs) if embs else np.zeros((0, 128), np.float32),
        rows=np.array(rows, dtype=str).reshape(-1, 3),
        skipped=np.array(skipped, dtype=str).reshape(-1, 2),
    )
    os.replace(tmp, shard_path)
    return len(photos)


def build_cache(photos: list[Photo], cache_dir: str | Path, config: AlignConfig = AlignConfig(),
                teacher: bool = False, workers: int = 2) -> Path:
    """Align (and teacher-embed) every photo once; returns the cache folder. Resumes a killed build."""
    key = cache_key(photos, config, teacher)
    out = Path(cache_dir) / key
    if (out / "manifest.json").exists():
        return out
    (out / "shards").mkdir(parents=True, exist_ok=True)
    jobs = [(out / "shards" / f"{i // SHARD:05d}.npz", photos[i:i + SHARD]) for i in range(0, len(photos), SHARD)]
    todo = [j for j in jobs if not j[0].exists()]
    done = sum(len(j[1]) for j in jobs) - sum(len(j[1]) for j in todo)
    print(f"crop cache {out}: {len(photos)} photos, {done} already done, teacher={teacher}", file=sys.stderr)
    with tqdm(total=len(photos), initial=done, desc="align", unit="photo", file=sys.stderr) as bar:
        if workers <= 1:
            _init_worker(config, teacher)
            for j in todo:
                bar.update(_build_shard(j))
        else:
            with get_context("spawn").Pool(workers, _init_worker, (config, teacher)) as pool:
                for n in pool.imap_unordered(_build_shard, todo):
                    bar.update(n)
    crops, embs, rows, skipped = [], [], [], []
    for path, _ in jobs:
        z = np.load(path)
        crops.append(z["crops"]); embs.append(z["teacher"]); rows.extend(map(tuple, z["rows"]))
        skipped.extend(map(tuple, z["skipped"]))
    _save_npy(out / "crops.npy", np.concatenate(crops))
    if teacher:
        _save_npy(out / "teacher.npy", np.concatenate(embs).astype(np.float32))
    _write_text(out / "photos.tsv", "".join(f"{p}\t{i}\t{r}\n" for p, i, r in rows))
    _write_text(out / "skipped.tsv", "".join(f"{p}\t{r}\n" for p, r in skipped))
    manifest = {"format": CACHE_FORMAT, "key": key, "photos": len(photos), "cached": len(rows),
                "skipped": len(skipped), "teacher": teacher, "align": asdict(config)}
    _write_text(out / "manifest.json", json.dumps(manifest, indent=1))  # written last: marks the cache complete
    print(json.dumps({"crop_cache": str(out), "cached": len(rows), "skipped": len(skipped)}), file=sys.stderr)
    return out


def wait_for_cache(photos: list[Photo], cache_dir: str | Path, config: AlignConfig = AlignConfig(),
                   teacher: bool = False, timeout: float = 24 * 3600, poll: float = 5.0) -> Path:
    """For the other ranks of a distributed run: wait until rank 0 has built the cache."""
    import time

    out = Path(cache_dir) / cache_key(photos, config, teacher)
    deadline = time.time() + timeout
    while not (out / "manifest.json").exists():
        if time.time() > deadline:
            raise TimeoutError(f"the crop cache {out} was not built within {timeout:.0f} s")
        time.sleep(poll)
    return out


def _save_npy(path: Path, arr: np.ndarray):
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)


def _write_text(path: Path, text: str):
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class CropCache:
    """A built cache, loaded: crops (memory-mapped), identities, teacher embeddings or None."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        manifest = self.folder / "manifest.json"
        if not manifest.exists():
            raise FileNotFoundError(f"{manifest} missing: the cache build did not finish")
        self.manifest = json.loads(manifest.read_text())
        self.crops = np.load(self.folder / "crops.npy", mmap_mode="r")
        rows = [line.split("\t") for line in (self.folder / "photos.tsv").read_text().splitlines()]
        self.paths = [r[0] for r in rows]
        self.identities = [r[1] for r in rows]
        t = self.folder / "teacher.npy"
        self.teacher = np.load(t) if t.exists() else None
        if len(self.crops) != len(rows) or (self.teacher is not None and len(self.teacher) != len(rows)):
            raise ValueError(f"{self.folder}: crops.npy, teacher.npy and photos.tsv disagree on the count")

    def __len__(self):
        return len(self.paths)


def the_only_cache(root: str | Path) -> Path:
    """The folder of the one built cache under root (`facegate train --cache-dir`, by default
    .cache/facegate/crops), for tools run after a training run; an error naming the count when
    there is none or more than one (then the tool's --cache names it)."""
    found = sorted(Path(root).glob("*/manifest.json"))
    if len(found) != 1:
        raise FileNotFoundError(f"{len(found)} crop caches under {root}: give --cache")
    return found[0].parent

