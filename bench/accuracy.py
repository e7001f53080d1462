"""facegate against the face_recognition library (dlib's ResNet), on the same pair list, in one run.

For each: 10-fold accuracy (LFW protocol), AUC, EER, TAR at FAR 1e-2 and 1e-3, and the time
per photo of detection+alignment and of embedding, each measured the same way for both: one
thread, batch 1, the first photos (warm-up) left out, the median over the photos. All the ROC
curves go on one PNG; the JSON is printed and also written beside the PNG (PLOT with .json:
do not redirect stdout to that same path). The peer runs with its documented defaults
(face_locations: HOG, 1 upsample; face_encodings: 5-point landmarks, 1 jitter) and as its
documentation uses it, `face_encodings(image)[0]`: the first face face_locations returns (its
detector's order), in "face_recognition". Where a photo shows several faces that first one need not
be the person the photo is about, so the same run scores the peer twice more, each with its paired
comparison: "face_recognition_largest_face" (the largest of HOG's faces) and
"face_recognition_central_face" (the face facegate's own rule, encoder.align.choose_face, picks
among HOG's boxes: the encoders compared on the same choice of face). Only the photos where a rule
picks another face are encoded again. A photo in which a detector finds no face is scored from a
centre crop (CONTRACT.md), for each.

Do thresholds set on one population hold on another? Each side's calibrated thresholds are applied to
these pairs: facegate's own (Verify's, Identify's, from its checkpoint) and, with --calib-pairs, the
peer's, calibrated the same way: on the same pair list (facegate's: lfw/pairs_calib.tsv) for the same
target FARs. Each reports the FAR on these impostor pairs beside its target, and the FRR.

  python bench/accuracy.py --pairs ../shared/data/faces/lfw/pairs_devtest.tsv --root ../shared/data/faces/lfw
  python bench/accuracy.py --pairs ../shared/data/faces/shift/pairs_casia.tsv --root ../shared/data/faces/shift/casia_facev5 \
      --calib-pairs ../shared/data/faces/lfw/pairs_calib.tsv
Needs the teacher extra for the peer (./dev teacher); without it, facegate alone is measured.
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"  # one thread, for both, before numpy/torch/dlib load

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from encoder.align import CENTRE_SHARE, choose_face  # noqa: E402
from encoder.images import decode_image  # noqa: E402
from encoder.pair_eval import WARMUP, PairList, embed_photos, pair_distances, thresholds_on_pairs  # noqa: E402
from encoder.pair_metrics import kfold_correct, mcnemar, pair_report, plot_roc, roc, threshold_at_far  # noqa: E402


PEER_RULES = {
    "first": "the first face face_locations returns (face_encodings(image)[0], the documented usage)",
    "largest": "the largest face face_locations returns",
    "central": "the face facegate's own rule picks among face_locations' boxes (encoder.align.choose_face: "
               "the largest and most central)",
}


def peer_faces(locs: list, shape: tuple) -> dict:
    """face_recognition's boxes in a photo ((top, right, bottom, left), in face_locations' order)
    -> {rule: the box it encodes} for PEER_RULES: the first box (what its documented usage,
    face_encodings(img)[0], encodes), the largest, and the one facegate's own face choice picks.
    No box: a centre crop for all (CONTRACT.md)."""
    h, w = shape[:2]
    if not locs:
        side = int(min(h, w) * CENTRE_SHARE)
        top, left = (h - side) // 2, (w - side) // 2
        locs = [(top, left + side, top + side, left)]
    boxes = np.array([(left, top, right, bottom) for top, right, bottom, left in locs], np.float32)
    return {"first": locs[0], "largest": max(locs, key=lambda b: (b[2] - b[0]) * (b[1] - b[3])),
            "central": locs[choose_face(boxes, h, w)]}


def peer_embed(root: Path, paths: list[str]):
    """-> ({rule: {photo: vector}} for PEER_RULES, photos without a face, median detection time,
    median embedding time of one face (the documented rule's))."""
    import face_recognition as fr

    vectors, no_face, t_det, t_emb = {rule: {} for rule in PEER_RULES}, 0, [], []
    for p in tqdm(paths, desc="face_recognition", unit="photo", file=sys.stderr):
        img = decode_image(root / p)
        t0 = time.perf_counter()
        locs = fr.face_locations(img)
        t1 = time.perf_counter()
        no_face += not locs
        faces = peer_faces(locs, img.shape)
        t2 = time.perf_counter()
        encoded = {faces["first"]: np.asarray(fr.face_encodings(img, known_face_locations=[faces["first"]])[0],
                                              np.float32)}
        t3 = time.perf_counter()
        for rule, face in faces.items():      # each other face encoded once, untimed
            if face not in encoded:
                encoded[face] = np.asarray(fr.face_encodings(img, known_face_locations=[face])[0], np.float32)
            vectors[rule][p] = encoded[face]
        t_det.append(t1 - t0)
        t_emb.append(t3 - t2)
    skip = WARMUP if len(paths) > 2 * WARMUP else 0
    return vectors, no_face, float(np.median(t_det[skip:])), float(np.median(t_emb[skip:]))


def calibrated_like(meta: dict, dist: np.ndarray, same: np.ndarray, pair_list: str) -> dict:
    """Thresholds for other distances at the target FARs facegate's checkpoint `meta` was calibrated
    for (Verify's, Identify's), on the pairs `dist`/`same` (the same pair list): a meta dict that
    encoder.pair_eval.thresholds_on_pairs reads."""
    out = {}
    for key in ("threshold", "identify_threshold"):
        target = (meta.get(f"{key}_info") or {}).get("target_far")
        if target:
            t, far, tar = threshold_at_far(dist, same, target)
            out[key] = round(t, 4)
            out[f"{key}_info"] = {"target_far": target, "far": round(far, 6), "tar": round(tar, 4), "pair_list": pair_list}
    return out


def paired(d_fg: np.ndarray, d_peer: np.ndarray, pairs: PairList) -> dict:
    """The two on the same pairs, each judged by the 10-fold protocol: is the difference more than
    the pairs that either gets right by luck of the threshold?"""
    m = mcnemar(kfold_correct(d_fg, pairs.same, pairs.folds), kfold_correct(d_peer, pairs.same, pairs.folds))
    return {"only_facegate_right": m["only_a_right"], "only_peer_right": m["only_b_right"],
            "both_wrong": m["both_wrong"], "mcnemar_p": m["mcnemar_p"]}


def score(pairs: PairList, vectors: dict, norm=None) -> tuple[np.ndarray, dict]:
    d = pair_distances(pairs, vectors, norm)
    return d, pair_report(d, pairs.same, pairs.folds)


def sec_per_norm(norm, vectors: dict, n: int = 200) -> float:
    """Median time of one photo's neighbourhood among the cohort (what score normalisation adds to a
    face's embedding; a pair's arithmetic after it is negligible), 1 thread, one photo at a time."""
    v = list(vectors.values())[:n]
    t = []
    for x in v:
        t0 = time.perf_counter()
        norm.stats(x[None])
        t.append(time.perf_counter() - t0)
    return float(np.median(t))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--plot", default=None, help="PNG path (default: bench/out/accuracy_<pairs>.png); the JSON is written beside it "
                    "with the suffix .json")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--calib-pairs", default=None,
                    help="calibrate the peer's thresholds on this pair list, for the FARs facegate's were "
                         "calibrated for (facegate's list: lfw/pairs_calib.tsv), and apply them to --pairs")
    ap.add_argument("--calib-root", default=None, help="the photos of --calib-pairs (default: its folder)")
    a = ap.parse_args()
    import torch

    from encoder.embedder import Embedder
    from encoder.precision import machine_info

    torch.set_num_threads(1)
    pairs = PairList.read(a.pairs)
    photos = sorted(set(pairs.a) | set(pairs.b))
    out = {"pairs": len(pairs.a), "images": len(photos), "threads": 1}
    curves = {}
    emb = Embedder.from_checkpoint(a.checkpoint)
    fg = embed_photos(emb, a.root, photos, threads=1, desc="facegate")
    d_fg, rep = score(pairs, fg.vectors, emb.norm)
    out["machine"] = machine_info()
    out["facegate"] = {**rep, "encoder_version": emb.version, "arithmetic": emb.arithmetic, "no_face": fg.no_face,
                       "sec_per_detect": round(fg.sec_per_detect, 5), "sec_per_embed": round(fg.sec_per_embed, 5),
                       "score_norm": (emb.meta["preprocessing"].get("score_norm") if emb.norm else None),
                       "at_calibrated_thresholds": thresholds_on_pairs(emb.meta, d_fg, pairs.same)}
    if emb.norm is not None:
        out["facegate"]["sec_per_norm"] = round(sec_per_norm(emb.norm, fg.vectors), 6)
    curves[emb.version] = roc(d_fg, pairs.same)[1:]
    if not a.no_peer:
        try:
            vectors, nf, td, te = peer_embed(Path(a.root), photos)
        except ImportError as e:
            out["face_recognition"] = {"error": f"not installed ({e}): run ./dev teacher"}
        else:
            first = vectors["first"]
            d, rep = score(pairs, first)
            out["face_recognition"] = {**rep, "face_choice": PEER_RULES["first"],
                                       "no_face": nf, "sec_per_detect": round(td, 5), "sec_per_embed": round(te, 5)}
            curves["face_recognition (first face, as documented)"] = roc(d, pairs.same)[1:]
            out["embed_speedup"] = round(te / max(fg.sec_per_embed, 1e-9), 2)
            out["acc_difference"] = round(out["facegate"]["acc"] - out["face_recognition"]["acc"], 4)
            out["paired"] = paired(d_fg, d, pairs)
            if a.calib_pairs:
                calib = PairList.read(a.calib_pairs)
                calib_root = Path(a.calib_root or Path(a.calib_pairs).parent)
                cv, _, _, _ = peer_embed(calib_root, sorted(set(calib.a) | set(calib.b)))
                meta = calibrated_like(emb.meta, pair_distances(calib, cv["first"]), calib.same,
                                       Path(a.calib_pairs).name)
                out["face_recognition"]["at_calibrated_thresholds"] = thresholds_on_pairs(meta, d, pairs.same)
            # the same encoder on other faces of the photos where HOG found several
            for rule in ("largest", "central"):
                d_rule, rep = score(pairs, vectors[rule])
                out[f"face_recognition_{rule}_face"] = {
                    **rep, "face_choice": PEER_RULES[rule],
                    "photos_where_it_differs": sum(vectors[rule][p] is not first[p] for p in photos),
                    "acc_difference": round(out["facegate"]["acc"] - rep["acc"], 4),
                    "paired": paired(d_fg, d_rule, pairs)}
                curves[f"face_recognition ({rule} face)"] = roc(d_rule, pairs.same)[1:]
    plot = Path(a.plot or ROOT / f"bench/out/accuracy_{Path(a.pairs).stem}.png")
    plot.parent.mkdir(parents=True, exist_ok=True)
    plot_roc(curves, str(plot), title=f"ROC on {Path(a.pairs).name}")
    out["plot"] = str(plot)
    plot.with_suffix(".json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
