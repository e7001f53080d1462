"""Score normalisation against a cohort: distances that mean the same for every kind of face.

An encoder trained on LFW's mostly white news faces packs the faces of other groups closer
together: at a threshold calibrated on LFW, two different Asian women matched far more often than
two different white men (bench/group_far.py). Adaptive symmetric score normalisation (AS-norm)
judges each distance against the neighbourhood of the two photos: for a photo p, m(p) and s(p)
are the mean and standard deviation of its K nearest distances to a cohort of other people's
faces; a pair's score is

    z = ((d - m(a)) / s(a) + (d - m(b)) / s(b)) / 2

(Cumani et al. 2011; Matejka et al. 2017, "Analysis of score normalization in multilingual
speaker recognition"). A face in a crowded part of the embedding, whatever crowds it, is asked
to come closer before it counts as a match. It works only as far as the cohort holds faces like
the ones scored: the cohort must span the people a site enrolls.

facegate keeps every distance and threshold in the unit of a Euclidean distance (CONTRACT.md):
the **normalised distance** is `ref_mean + ref_sd * z`, clipped at 0, where ref_mean and ref_sd
are the cohort's own typical m and s. For a photo whose neighbourhood is the cohort's typical one
it equals the Euclidean distance; the same vector twice is about 0. Thresholds calibrated on
normalised distances hold only with the same cohort: the cohort is part of the encoder release
and of its version (encoder/checkpoint.py), so templates and thresholds of another scoring are
never mixed with these.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BLOCK = 4096          # rows of a stats computation at a time (memory: BLOCK x cohort floats)


def euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise distance of L2-normalised vectors (a and b: n x dim, or one of them 1 x dim)."""
    return np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32), axis=-1)


def cohort_digest(cohort: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(cohort, np.float16).tobytes()).hexdigest()[:12]


@dataclass(frozen=True)
class ScoreNorm:
    cohort: np.ndarray          # n x dim, L2-normalised embeddings of other people's faces
    k: int                      # nearest cohort faces a photo's neighbourhood is read from
    ref_mean: float             # the cohort's typical m and s: the unit of normalised distances
    ref_sd: float
    name: str = ""              # where the cohort comes from (a release's model card says more)

    def __post_init__(self):
        if self.cohort.ndim != 2 or len(self.cohort) <= self.k or self.k < 2:
            raise ValueError(f"a cohort needs more than k >= 2 faces: {self.cohort.shape}, k {self.k}")
        if not (self.ref_sd > 0):
            raise ValueError(f"ref_sd must be > 0, got {self.ref_sd}")

    @property
    def digest(self) -> str:
        return cohort_digest(self.cohort)

    def stats(self, vectors: np.ndarray, leave_self_out: bool = False) -> np.ndarray:
        """n x 2: each vector's (m, s), the mean and sd of its k nearest distances to the cohort.
        `leave_self_out`: the vectors are cohort members; each one's own zero distance is skipped."""
        v = np.asarray(vectors, np.float32).reshape(-1, self.cohort.shape[1])
        c = np.asarray(self.cohort, np.float32)
        k = self.k + int(leave_self_out)
        out = np.empty((len(v), 2), np.float32)
        for i in range(0, len(v), BLOCK):
            d = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * v[i:i + BLOCK] @ c.T))
            near = np.partition(d, k - 1, axis=1)[:, :k]
            if leave_self_out:
                near = np.sort(near, axis=1)[:, 1:]
            out[i:i + BLOCK, 0] = near.mean(1)
            out[i:i + BLOCK, 1] = np.maximum(near.std(1), 1e-6)
        return out

    def normalise(self, d: np.ndarray, stats_a: np.ndarray, stats_b: np.ndarray) -> np.ndarray:
        """Normalised distances of pairs with Euclidean distances `d` and the two sides' stats
        (each n x 2, or 1 x 2 for one photo against many)."""
        d = np.asarray(d, np.float32)
        sa, sb = np.asarray(stats_a, np.float32), np.asarray(stats_b, np.float32)
        z = 0.5 * ((d - sa[..., 0]) / sa[..., 1] + (d - sb[..., 0]) / sb[..., 1])
        return np.maximum(0.0, self.ref_mean + self.ref_sd * z)

    def distances(self, probe: np.ndarray, templates: np.ndarray) -> np.ndarray:
        """One photo against several: normalised distances (len(templates),)."""
        t = np.asarray(templates, np.float32).reshape(-1, self.cohort.shape[1])
        p = np.asarray(probe, np.float32).reshape(1, -1)
        return self.normalise(euclidean(t, p), self.stats(p), self.stats(t))

    def pair_distances(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Normalised distances of row-wise pairs (a[i], b[i])."""
        return self.normalise(euclidean(a, b), self.stats(a), self.stats(b))

    # ------------------------------------------------------------------ in a release file
    def info(self) -> dict:
        """What a release's preprocessing records of it (and its version digests)."""
        return {"method": "as-norm", "k": self.k, "ref_mean": round(float(self.ref_mean), 6),
                "ref_sd": round(float(self.ref_sd), 6), "cohort": self.name, "cohort_size": int(len(self.cohort)),
                "cohort_sha256": self.digest}

    @classmethod
    def build(cls, cohort: np.ndarray, k: int, name: str) -> "ScoreNorm":
        """From cohort embeddings: the unit is the median (m, s) of the cohort's own members."""
        cohort = np.ascontiguousarray(cohort, np.float16).astype(np.float32)
        probe = cls(cohort, k, 1.0, 1.0, name)
        st = probe.stats(cohort, leave_self_out=True)
        return cls(cohort, k, float(np.median(st[:, 0])), float(np.median(st[:, 1])), name)

    @classmethod
    def from_meta(cls, meta: dict) -> "ScoreNorm | None":
        """The release's score normalisation, or None (scores are plain Euclidean distances)."""
        info = (meta.get("preprocessing") or {}).get("score_norm")
        if not info:
            return None
        raw = meta.get("score_norm_cohort")           # float16 bytes (encoder.checkpoint._meta)
        if not isinstance(raw, bytes) or len(raw) % (2 * int(info["cohort_size"])):
            raise ValueError("the release names a score-normalisation cohort but does not hold it")
        cohort = np.frombuffer(raw, np.float16).reshape(int(info["cohort_size"]), -1).astype(np.float32)
        norm = cls(cohort, int(info["k"]), float(info["ref_mean"]), float(info["ref_sd"]), info.get("cohort", ""))
        if norm.digest != info.get("cohort_sha256"):
            raise ValueError(f"the release's cohort does not match its digest ({norm.digest} != "
                             f"{info.get('cohort_sha256')})")
        return norm


def scorer(norm: ScoreNorm | None):
    """(a, b) -> distances of row-wise pairs: normalised with `norm`, else Euclidean."""
    return norm.pair_distances if norm is not None else euclidean


def claim_distance(template_distances: np.ndarray) -> float:
    """A claim's distance to a subject of several templates (ID photos): the mean of the probe's
    distances to each. Thresholds are calibrated on pairs of single photos; judged by the nearest
    template instead, an impostor would get one try per template, and a subject enrolled with five
    ID photos would admit ~4x the calibrated FAR (bench/claim_rule.py measures it on LFW). The mean
    keeps a claim's FAR near or under the pairs' whatever the number of templates, with a TAR as
    high or higher for a given FAR (on LFW). Verify (service/pipeline.py) and calibrate-enrolled (service/calibration.py)
    both judge a claim by it."""
    d = np.asarray(template_distances, np.float64)
    if d.size == 0:
        raise ValueError("a claim needs at least one template")
    return float(d.mean())


# ---------------------------------------------------------------------- building a release's cohort
PARTS = ("all", "a", "b")


def photo_part(name: str) -> str:
    """A photo's half of a cohort folder, fixed by its file name: "a" or "b". A release whose cohort
    is one half leaves the other half to measure on (bench/group_far.py), never in the cohort."""
    return "ab"[hashlib.sha1(name.encode()).digest()[0] % 2]


def cohort_photos(folder, part: str = "all") -> list[Path]:
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    return [f for f in sorted(Path(folder).glob("*.jpg")) if part == "all" or photo_part(f.name) == part]


def main(argv=None) -> int:
    """python -m encoder.score_norm RELEASE.pt --photos DIR [--part a] [--k 400] [--name NAME]:
    embed a folder of faces (one person a photo, or near enough) with the release's encoder and
    record them in the release as its score-normalisation cohort. The release's version changes and
    its thresholds are dropped: calibrate it again (scripts/release_encoder.sh does both)."""
    import argparse
    import json
    import sys

    import torch
    from tqdm import tqdm

    from .checkpoint import record_in_checkpoint
    from .embedder import Embedder
    from .images import decode_image

    ap = argparse.ArgumentParser(description=main.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("release")
    ap.add_argument("--photos", required=True, help="a folder of face photos (*.jpg)")
    ap.add_argument("--part", default="all", choices=PARTS, help="one half of the folder, by file name (photo_part)")
    ap.add_argument("--k", type=int, default=400)
    ap.add_argument("--name", default=None, help="what the cohort is (default: the folder's name and part)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    emb = Embedder.from_checkpoint(a.release)
    if emb.norm is not None:
        print(f"{a.release} has a cohort already ({emb.meta['preprocessing']['score_norm']['cohort']}): "
              f"name a release file without one", file=sys.stderr)
        return 2
    vectors, no_face = [], 0
    for f in tqdm(cohort_photos(a.photos, a.part), desc="cohort", unit="photo", file=sys.stderr):
        al = emb.align(decode_image(f))
        if al.crop is None:
            no_face += 1
            continue
        vectors.append(emb.embed_crops(al.crop[None])[0])
    name = a.name or f"{Path(a.photos).name}:{a.part}"
    norm = ScoreNorm.build(np.stack(vectors), a.k, name)
    version = record_in_checkpoint(a.release, score_norm=norm)
    print(json.dumps({"release": a.release, "encoder_version": version, "no_face": no_face, **norm.info()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
