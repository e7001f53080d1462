"""eval-pairs and calibrate: embed every photo of a pair list once, then score the pairs.

Timing follows CONTRACT.md: one thread, batch 1, the median per photo with the first few
photos (warm-up) left out; detection+alignment and embedding are timed separately.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from .embedder import Embedder
from .images import decode_image
from .pair_metrics import pair_report, roc, threshold_at_far
from .score_norm import ScoreNorm, euclidean

WARMUP = 5


@dataclass
class PairList:
    a: list[str]
    b: list[str]
    same: np.ndarray
    folds: np.ndarray

    @staticmethod
    def read(path: str | Path) -> "PairList":
        a, b, same, folds = [], [], [], []
        for n, line in enumerate(Path(path).read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 4:
                raise ValueError(f"{path}:{n}: expected path_a<TAB>path_b<TAB>same<TAB>fold, got {len(parts)} fields")
            a.append(parts[0]); b.append(parts[1]); same.append(int(parts[2])); folds.append(int(parts[3]))
        if not a:
            raise ValueError(f"{path}: no pairs")
        return PairList(a, b, np.array(same, bool), np.array(folds))


@dataclass
class PhotoEmbeddings:
    vectors: dict[str, np.ndarray]
    no_face: int
    sec_per_detect: float
    sec_per_embed: float


def embed_photos(embedder: Embedder, root: str | Path, paths: list[str], threads: int = 1,
                 desc: str = "embed") -> PhotoEmbeddings:
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    vectors, no_face, t_det, t_emb = {}, 0, [], []
    try:
        for p in tqdm(paths, desc=desc, unit="photo", file=sys.stderr):
            img = decode_image(Path(root) / p)
            t0 = time.perf_counter()
            a = embedder.align(img)
            t1 = time.perf_counter()
            if a.crop is None:
                no_face += 1
                crop = embedder.aligner.fallback_crop(img)
            else:
                crop = a.crop
            t2 = time.perf_counter()
            vectors[p] = embedder.embed_crops(crop[None])[0]
            t3 = time.perf_counter()
            t_det.append(t1 - t0)
            t_emb.append(t3 - t2)
    finally:
        torch.set_num_threads(prev)
    skip = WARMUP if len(paths) > 2 * WARMUP else 0
    return PhotoEmbeddings(vectors, no_face, float(np.median(t_det[skip:])), float(np.median(t_emb[skip:])))


def pair_distances(pairs: PairList, vectors: dict[str, np.ndarray], norm: ScoreNorm | None = None) -> np.ndarray:
    """The distance of each pair, from {photo: vector}: normalised with the release's score
    normalisation `norm` (encoder/score_norm.py), else Euclidean. Each photo's neighbourhood
    among the cohort is computed once, however many pairs it is in."""
    if norm is None:
        return euclidean(np.stack([vectors[p] for p in pairs.a]), np.stack([vectors[p] for p in pairs.b]))
    photos = sorted(set(pairs.a) | set(pairs.b))
    row = {p: i for i, p in enumerate(photos)}
    v = np.stack([vectors[p] for p in photos])
    st = norm.stats(v)
    ia, ib = np.array([row[p] for p in pairs.a]), np.array([row[p] for p in pairs.b])
    return norm.normalise(euclidean(v[ia], v[ib]), st[ia], st[ib])


def eval_pairs(embedder: Embedder, pairs_path, root, plot: str | None = None) -> dict:
    pairs = PairList.read(pairs_path)
    photos = sorted(set(pairs.a) | set(pairs.b))
    emb = embed_photos(embedder, root, photos)
    dist = pair_distances(pairs, emb.vectors, embedder.norm)
    report = pair_report(dist, pairs.same, pairs.folds)
    report.update({
        "images": len(photos), "no_face": emb.no_face,
        "sec_per_detect": round(emb.sec_per_detect, 5), "sec_per_embed": round(emb.sec_per_embed, 5),
        "sec_per_image": round(emb.sec_per_detect + emb.sec_per_embed, 5),
        "encoder_version": embedder.version,
    })
    shipped = thresholds_on_pairs(embedder.meta, dist, pairs.same)
    if shipped:
        report["at_encoder_thresholds"] = shipped
    if plot:
        from .pair_metrics import plot_roc

        _, far, tar = roc(dist, pairs.same)
        plot_roc({f"facegate {embedder.version}": (far, tar)}, plot, title=f"ROC on {Path(pairs_path).name}")
        report["plot"] = str(plot)
    return report


def thresholds_on_pairs(meta: dict, dist: np.ndarray, same: np.ndarray) -> dict:
    """What the encoder's own calibrated thresholds (Verify's, Identify's) do on these pairs: the
    FAR on their impostor pairs and the FRR on their genuine ones, beside the FAR each was
    calibrated for (do thresholds set on one population hold on another?)."""
    out = {}
    for kind, key in (("verify", "threshold"), ("identify", "identify_threshold")):
        t = meta.get(key)
        if t is None:
            continue
        info = meta.get(f"{key}_info") or {}
        imp, gen = dist[~same], dist[same]
        out[kind] = {"threshold": t, "target_far": info.get("target_far"), "calibrated_on": info.get("pair_list"),
                     "far": round(float((imp <= t).mean()), 6) if len(imp) else None,
                     "false_accepts": int((imp <= t).sum()), "impostor_pairs": int(len(imp)),
                     "frr": round(float((gen > t).mean()), 4) if len(gen) else None}
        if out[kind]["target_far"] and out[kind]["far"] is not None:
            out[kind]["far_over_target"] = round(out[kind]["far"] / out[kind]["target_far"], 2)
    return out


def calibrate(embedder: Embedder, pairs_path, root, target_far: float) -> dict:
    pairs = PairList.read(pairs_path)
    if pairs.same.all() or not pairs.same.any():
        raise ValueError(f"{pairs_path}: calibration needs both genuine and impostor pairs")
    if target_far * (~pairs.same).sum() < 1:
        print(f"warning: {(~pairs.same).sum()} impostor pairs cannot resolve FAR {target_far}; "
              f"the threshold admits no impostor at all", file=sys.stderr)
    photos = sorted(set(pairs.a) | set(pairs.b))
    emb = embed_photos(embedder, root, photos, desc="calibrate")
    dist = pair_distances(pairs, emb.vectors, embedder.norm)
    t, far, tar = threshold_at_far(dist, pairs.same, target_far)
    return {"threshold": round(t, 4), "far": round(far, 6), "tar": round(tar, 4), "target_far": target_far,
            "genuine_pairs": int(pairs.same.sum()), "impostor_pairs": int((~pairs.same).sum()),
            "images": len(photos), "no_face": emb.no_face, "encoder_version": embedder.version}
