"""Calibration: thresholds and TOO_DARK, decided from labelled pairs for a target false-accept rate.

It needs the encoder and the gates together, so it lives here, above both (ARCHITECTURE.md:
gates never import encoder). Where the values go is the caller's choice, and only two places
are allowed: a data folder's thresholds store (per site and light profile) or a release file
(encoder.checkpoint.release_copy); never the packaged checkpoint in place.

Day: the threshold at the target FAR on the pair list as it is (encoder.pair_eval.calibrate).
Night (darkened pairs_calib.tsv): each pair is (an enrolled day photo, a probe photo taken at
the door). The probe of every pair is darkened the way a night camera darkens
(gates.daynight.darken: gain, gamma, colour cast, blur, sensor noise) at several strengths,
seeded per photo and strength, and then goes through what the service would run on it: the
day/night classifier, MTCNN, the encoder.

- The curve: probes binned by their light level (mean luminance, what the gate measures);
  per bin, the encoder's TAR at the site's target FAR (the best any night threshold could
  do at that light level), with a probe in which no face is found counted as a false reject.
- TOO_DARK: the light level below which that TAR falls under the site's target TAR; there the
  face models' answer is not worth having, and the kiosk asks for a retake instead.
- The night thresholds (Verify's and Identify's): calibrated like the day ones, at the site's
  target FARs, on the probes the classifier calls "night" and that are not TOO_DARK.

A site's own population (calibrate_enrolled): thresholds calibrated on LFW do not hold where
impostors are closer to one another (one demographic group). The site's enrolled templates are
its labelled claims for free: any template claiming another subject is an impostor claim. The
day threshold at the target FAR on them, never looser than the one the site already has.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from encoder.checkpoint import record_in_checkpoint
from encoder.embedder import Embedder
from encoder.images import decode_image
from encoder.pair_eval import PairList, calibrate
from encoder.pair_metrics import threshold_at_far
from encoder.score_norm import ScoreNorm, scorer
from gates.daynight import DayNightGate, darken, light_level

from .errors import FailedPrecondition, InvalidArgument
from .thresholds import ThresholdStore

STRENGTHS = (0.2, 0.4, 0.6, 0.8, 1.0)
# light bins (mean luminance) for the curve; the darkest photos of a night camera sit near 0.02
BIN_EDGES = (0.0, 0.02, 0.04, 0.06, 0.08, 0.10, 0.13, 0.16, 0.20, 0.25, 0.32, 0.45, 1.0)


@dataclass
class DarkPairs:
    """Per pair (rows) and darkening (columns; column 0 is the probe as taken): the distance
    (inf where no face was found in the probe), the probe's light level and its profile."""
    same: np.ndarray          # n_pairs
    dist: np.ndarray          # n_pairs x (1 + n_strengths)
    light: np.ndarray         # n_pairs x (1 + n_strengths)
    night: np.ndarray         # n_pairs x (1 + n_strengths), bool: the classifier says night
    strengths: tuple[float, ...]
    dropped_pairs: int        # pairs whose enrolled (day) photo has no usable face


def _seed(path: str, strength: float, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(path.encode()), int(round(strength * 1000))])


def darkened_pairs(embedder: Embedder, daynight: DayNightGate, pairs_path, root, strengths=STRENGTHS,
                   seed: int = 0, threads: int = 1) -> DarkPairs:
    pairs = PairList.read(pairs_path)
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    day: dict[str, np.ndarray | None] = {}
    probe: dict[tuple[str, int], tuple[np.ndarray | None, float, bool]] = {}
    try:
        for p in tqdm(sorted(set(pairs.a)), desc="enrolled photos", unit="photo", file=sys.stderr):
            day[p] = embedder.embed(decode_image(Path(root) / p)).vector
        for p in tqdm(sorted(set(pairs.b)), desc="probes x darkness", unit="photo", file=sys.stderr):
            img = decode_image(Path(root) / p)
            views = [img] + [darken(img, _seed(p, s, seed), s) for s in strengths]
            gate = daynight.predict_batch(views)
            for j, (v, g) in enumerate(zip(views, gate)):
                probe[p, j] = (embedder.embed(v).vector, light_level(v), g.label == "night")
    finally:
        torch.set_num_threads(prev)
    score = scorer(embedder.norm)                        # Verify's distance: normalised where the release says
    keep = np.array([day[a] is not None for a in pairs.a])
    n, m = int(keep.sum()), 1 + len(strengths)
    dist, light, night = np.full((n, m), np.inf), np.zeros((n, m)), np.zeros((n, m), bool)
    for row, i in enumerate(np.nonzero(keep)[0]):
        for j in range(m):
            v, lv, nt = probe[pairs.b[i], j]
            light[row, j], night[row, j] = lv, nt
            if v is not None:
                dist[row, j] = float(score(day[pairs.a[i]][None], v[None])[0])
    return DarkPairs(pairs.same[keep], dist, light, night, tuple(strengths), int((~keep).sum()))


def _tar_at_far(dist: np.ndarray, same: np.ndarray, target_far: float) -> tuple[float, float]:
    """(threshold, TAR) at the target FAR; infinite distances (no face) are never accepted."""
    if same.all() or not same.any():
        return float("nan"), float("nan")
    finite = np.isfinite(dist)
    big = np.where(finite, dist, np.nanmax(dist[finite]) + 10.0 if finite.any() else 10.0)
    t, _, _ = threshold_at_far(big, same, target_far)
    return t, float(((dist <= t) & same & finite).sum() / same.sum())


def curve(dp: DarkPairs, target_far: float, threshold: float | None = None) -> list[dict]:
    """Per light bin (darkened probes only): pairs, face found, TAR at the target FAR; and, where
    `threshold` is given, the FAR and TAR that threshold gives there."""
    same = np.repeat(dp.same[:, None], dp.dist.shape[1], 1)[:, 1:].ravel()
    dist, light = dp.dist[:, 1:].ravel(), dp.light[:, 1:].ravel()
    rows = []
    for lo, hi in zip(BIN_EDGES[:-1], BIN_EDGES[1:]):
        b = (light >= lo) & (light < hi)
        if b.sum() == 0 or not same[b].any() or same[b].all():
            continue
        _, tar = _tar_at_far(dist[b], same[b], target_far)
        row = {"light_lo": lo, "light_hi": hi, "genuine": int(same[b].sum()), "impostor": int((~same[b]).sum()),
               "face_found": round(float(np.isfinite(dist[b]).mean()), 4), "tar_at_target_far": round(tar, 4)}
        if threshold is not None:
            acc = dist[b] <= threshold
            row["far"] = round(float(acc[~same[b]].mean()), 5)
            row["tar"] = round(float(acc[same[b]].mean()), 4)
        rows.append(row)
    return rows


def too_dark_level(rows: list[dict], min_tar: float, min_genuine: int = 30) -> float:
    """The light level below which TAR at the target FAR falls under `min_tar`: from the darkest
    bin up, the upper edge of the last bin of the run of bins that all miss it (bins with too few
    genuine pairs to judge are passed over); 0.0 if the darkest bin does not miss it. A brighter
    bin that misses it after one that met it is noise of the estimate (TAR at a FAR of 1e-3 from
    150 genuine pairs moves by +-0.03), not darkness, and does not count."""
    level = 0.0
    for r in sorted(rows, key=lambda r: r["light_lo"]):
        if r["genuine"] < min_genuine:
            continue
        if r["tar_at_target_far"] >= min_tar:
            break
        level = r["light_hi"]
    return level


def save_dark_pairs(dp: DarkPairs, path: str | Path) -> None:
    np.savez_compressed(path, same=dp.same, dist=dp.dist, light=dp.light, night=dp.night,
                        strengths=np.array(dp.strengths), dropped_pairs=dp.dropped_pairs)


def load_dark_pairs(path: str | Path) -> DarkPairs:
    z = np.load(path)
    return DarkPairs(z["same"], z["dist"], z["light"], z["night"], tuple(float(s) for s in z["strengths"]),
                     int(z["dropped_pairs"]))


def calibrate_night(dp: DarkPairs, target_far: float, identify_far: float, min_tar: float | None = None,
                    min_tar_ratio: float = 0.8) -> dict:
    """TOO_DARK and the night thresholds of a site. `min_tar` None: `min_tar_ratio` x the TAR the
    encoder reaches at the target FAR on the probes as taken (by day)."""
    _, day_tar = _tar_at_far(dp.dist[:, 0], dp.same, target_far)
    min_tar = round(min_tar_ratio * day_tar, 4) if min_tar is None else min_tar
    rows = curve(dp, target_far)
    level = too_dark_level(rows, min_tar)
    same = np.repeat(dp.same[:, None], dp.dist.shape[1], 1).ravel()
    use = (dp.night & (dp.light >= level)).ravel()
    dist = dp.dist.ravel()
    t_verify, tar = _tar_at_far(dist[use], same[use], target_far)
    t_identify, tar_id = _tar_at_far(dist[use], same[use], identify_far)
    far = float((dist[use] <= t_verify)[~same[use]].mean())
    return {
        "too_dark_light": level, "min_tar": min_tar, "day_tar_at_target_far": round(day_tar, 4),
        "target_far": target_far, "identify_far": identify_far,
        "night_threshold": round(t_verify, 4), "night_far": round(far, 6), "night_tar": round(tar, 4),
        "night_identify_threshold": round(t_identify, 4), "night_identify_tar": round(tar_id, 4),
        "night_genuine_pairs": int(same[use].sum()), "night_impostor_pairs": int((~same[use]).sum()),
        "dropped_pairs": dp.dropped_pairs, "strengths": list(dp.strengths),
        "curve": curve(dp, target_far, t_verify),
    }


def plot_curve(result: dict, path: str | Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["curve"]
    x = [(r["light_lo"] + r["light_hi"]) / 2 for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(x, [r["tar_at_target_far"] for r in rows], "o-", label=f"TAR at FAR {result['target_far']:g} (best threshold per bin)")
    ax.plot(x, [r["tar"] for r in rows], "s--", label=f"TAR at the night threshold {result['night_threshold']}")
    ax.plot(x, [r["face_found"] for r in rows], "^:", label="face found (MTCNN)")
    ax.axhline(result["min_tar"], color="grey", lw=0.8, label=f"site's target TAR {result['min_tar']}")
    ax.axvline(result["too_dark_light"], color="red", lw=1.0, label=f"TOO_DARK below light {result['too_dark_light']}")
    ax.set_xlabel("probe light level (mean luminance, 0..1)")
    ax.set_ylabel("rate")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------ the two profiles
def calibrate_day(embedder: Embedder, pairs: str | Path, root: str | Path, target_far: float, site: str,
                  kind: str = "verify") -> dict:
    """Verify's threshold (kind "verify") or Identify's stricter one ("identify") at the target FAR."""
    res = calibrate(embedder, pairs, root, target_far)
    return {**res, "site": site, "profile": "day", "kind": kind, "pair_list": Path(pairs).name,
            "target_far": target_far}


def default_cache_dir() -> Path:
    """Where the darkened probes' distances are kept between runs (not the source tree)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "facegate" / "night"


def calibrate_night_profile(embedder: Embedder, daynight: DayNightGate, pairs: str | Path, root: str | Path,
                            target_far: float, identify_far: float, site: str, min_tar: float | None = None,
                            seed: int = 0, cache_dir: Path | None = None) -> dict:
    """TOO_DARK's light level and the night thresholds (Verify's at target_far, Identify's at
    identify_far). The darkened probes' distances depend on the encoder, the day/night gate, the
    pair list and the seed, not on the targets: they are cached, so other targets take seconds."""
    key = hashlib.sha256(json.dumps([embedder.version, embedder.arithmetic, daynight.digest,
                                     hashlib.sha256(Path(pairs).read_bytes()).hexdigest(), seed])
                         .encode()).hexdigest()[:16]
    cache = (cache_dir or default_cache_dir()) / f"{key}.npz"
    if cache.is_file():
        dp = load_dark_pairs(cache)
    else:
        dp = darkened_pairs(embedder, daynight, pairs, root, seed=seed)
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_dark_pairs(dp, cache)
    res = calibrate_night(dp, target_far, identify_far, min_tar=min_tar)
    return {"threshold": res["night_threshold"], "far": res["night_far"], "tar": res["night_tar"], **res,
            "site": site, "profile": "night", "encoder_version": embedder.version, "pair_list": Path(pairs).name}


# ------------------------------------------------------------------------------ where they go
def write_to_data_folder(res: dict, data_dir: str | Path | None, store: ThresholdStore | None = None) -> Path:
    """A calibration's values into the data folder's thresholds store (or `store`: the shared
    PostgreSQL one), for its site and profile."""
    store = store or ThresholdStore(data_dir)
    version, site = res["encoder_version"], res["site"]
    if res["profile"] == "day":
        store.put(site, "day", res["threshold"], version, kind=res["kind"], far=res["far"], tar=res["tar"],
                  target_far=res["target_far"], pair_list=res["pair_list"])
        return store.path
    info = {"target_far": res["target_far"], "pair_list": res["pair_list"], "darkened": True}
    store.put(site, "night", res["night_threshold"], version, kind="verify", far=res["night_far"],
              tar=res["night_tar"], **info)
    store.put(site, "night", res["night_identify_threshold"], version, kind="identify",
              tar=res["night_identify_tar"], **{**info, "target_far": res["identify_far"]})
    store.put(site, "night", res["too_dark_light"], version, kind="too_dark", min_tar=res["min_tar"], **info)
    return store.path


def write_to_release(res: dict, release: str | Path) -> str:
    """A calibration's values into a release file as the encoder's own defaults -> its version."""
    if res["profile"] == "night":
        summary = {k: v for k, v in res.items() if k != "curve"}
        return record_in_checkpoint(release, night_threshold=res["night_threshold"],
                                    night_identify_threshold=res["night_identify_threshold"],
                                    too_dark_light=res["too_dark_light"], night_info=summary)
    if res["kind"] == "identify":
        return record_in_checkpoint(release, identify_threshold=res["threshold"], identify_threshold_info=res)
    return record_in_checkpoint(release, threshold=res["threshold"], threshold_info=res)


# ------------------------------------------------------------------------------ the site's own people
TIE = 1e-9      # distances closer than this are one distance (two pairs of ID photos at equal angles)


def _admitted(claims: int, target_far: float) -> int:
    """The most impostor claims a threshold may accept: the largest k with k / claims <= F (the FAR
    as encoder.pair_metrics.roc computes it, so the two rules agree at the boundary)."""
    k = int(target_far * claims)
    while k < claims and (k + 1) / claims <= target_far:
        k += 1
    while k > 0 and k / claims > target_far:
        k -= 1
    return k


def _claim_distances(x: np.ndarray, codes: np.ndarray, block_elems: int,
                     norm: ScoreNorm | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Verify's distances for the claims the enrolled templates can make, as Verify measures them
    (encoder.score_norm.claim_distance: the mean distance to the claimed subject's templates).
    Impostor claims: each template claiming each other subject; genuine claims: each template of a
    subject with several claiming its own subject, its own template left out. A block of rows at a
    time: memory stays ~block_elems for the distances, plus the claims themselves. With the
    release's score normalisation `norm`, the distances are normalised as Verify's are."""
    order = np.argsort(codes, kind="stable")
    xs, cs = x[order], codes[order]
    st = norm.stats(xs) if norm is not None else None
    n, subjects = len(xs), int(cs.max()) + 1
    starts = np.flatnonzero(np.r_[True, np.diff(cs) != 0])          # each subject's first column
    sizes = np.diff(np.r_[starts, n])                                # each subject's templates
    sq = np.einsum("ij,ij->i", xs, xs)
    rows = max(1, block_elems // max(n, 1))
    impostor, genuine = [], []
    for s in range(0, n, rows):
        e = min(s + rows, n)
        d = np.sqrt(np.maximum(sq[s:e, None] + sq[None, :] - 2.0 * (xs[s:e] @ xs.T), 0.0))
        if norm is not None:
            d = norm.normalise(d, st[s:e, None, :], st[None, :, :]).astype(np.float64)
        d[np.arange(e - s), np.arange(s, e)] = 0.0                     # a template never claims itself
        own = np.zeros((e - s, subjects), dtype=bool)
        own[np.arange(e - s), cs[s:e]] = True
        count = np.where(own, sizes - 1, sizes)                         # its own subject: itself left out
        with np.errstate(invalid="ignore", divide="ignore"):          # 0/0: a subject's only template, itself
            claim = np.add.reduceat(d, starts, axis=1) / count
        impostor.append(claim[~own])
        g = claim[own]
        genuine.append(g[np.isfinite(g)])
    assert sum(len(i) for i in impostor) == n * (subjects - 1)
    return np.concatenate(impostor), np.concatenate(genuine)


def calibrate_enrolled(vectors: np.ndarray, subjects, target_far: float, current: float | None = None,
                       block_elems: int = 1 << 22, norm: ScoreNorm | None = None) -> dict:
    """A day threshold at the target FAR for a site's own population, from its enrolled templates,
    with no labelled pairs: each template claiming another enrolled subject is an impostor claim
    (ID photo against ID photos), measured as Verify measures a claim: the mean of its distances
    to that subject's templates (encoder.score_norm.claim_distance); the FAR is the claims'. Each
    template of a subject with several, claiming its own subject (itself left out), is a genuine claim.

    The threshold follows encoder.pair_metrics.threshold_at_far on the impostor claims (midway
    between the last impostor distance admitted and the next one), rounded down to 4 decimals.
    It never loosens `current`, the site's threshold in force: the result is the smaller of the
    two, and `chosen` says which ("enrolled" or "previous"). FAR and TAR are the result's on the
    enrolled claims (TAR None without genuine claims). Refused: a target outside (0, 1) or finer
    than the impostor claims resolve (F x claims < 1) (InvalidArgument), fewer than 2 subjects
    (FailedPrecondition)."""
    x = np.asarray(vectors, np.float64)
    subjects = list(subjects)
    if x.ndim != 2 or len(x) != len(subjects):
        raise InvalidArgument(f"{len(subjects)} subject ids for vectors of shape {x.shape}: one id per row expected")
    if not 0 < target_far < 1:
        raise InvalidArgument(f"the target FAR must lie in (0, 1), got {target_far}")
    names, codes = np.unique(np.asarray(subjects, dtype=object).astype(str), return_inverse=True)
    if len(names) < 2:
        raise FailedPrecondition(f"{len(names)} enrolled subject(s) of this encoder: impostor claims need at least "
                                 f"2 subjects; enroll the site's people first")
    claims = len(x) * (len(names) - 1)
    if target_far * claims < 1:
        raise InvalidArgument(f"{claims} impostor claims ({len(names)} subjects) cannot resolve a FAR of "
                              f"{target_far:g}: it needs at least {int(np.ceil(1 / target_far))}; choose "
                              f"--target-far >= {1 / claims:.3g} or enroll more subjects")
    impostor, genuine = _claim_distances(x, codes, block_elems, norm)
    k = _admitted(claims, target_far)
    low = np.sort(np.partition(impostor, k)[:k + 1]).astype(np.float64)    # k < claims: low[k] is refused
    below = low[:k][low[:k] < low[k] - TIE]         # a tie with the refused claim is refused with it
    t = (below[-1] + low[k]) / 2 if below.size else low[0] - 1e-6
    enrolled = float(np.floor(t * 1e4) / 1e4)
    if enrolled <= 0:
        raise FailedPrecondition(f"more than a FAR of {target_far:g} of the impostor claims are at distance "
                                 f"{low[k]:.4g}: the same photo is enrolled under several subjects")
    chosen = "enrolled" if current is None or enrolled <= current else "previous"
    threshold = enrolled if chosen == "enrolled" else float(current)
    return {
        "threshold": threshold, "enrolled_threshold": enrolled, "previous_threshold": current, "chosen": chosen,
        "far_on_enrolled": float((impostor <= threshold).sum() / claims),
        "tar_on_enrolled": round(float((genuine <= threshold).mean()), 4) if genuine.size else None,
        "target_far": target_far, "impostor_claims": claims, "genuine_claims": int(genuine.size),
        "subjects": len(names), "templates": len(x),
    }


def threshold_in_force(store: ThresholdStore, site: str, kind: str, encoder_version: str,
                       encoder_meta: dict, default_site: str | None = None) -> tuple[float | None, str | None]:
    """The day threshold a site's doors use now, as the server looks it up (service/pipeline.py):
    the site's own for this encoder -> (value, "site"), else the default site's -> (value,
    "default_site"), else the encoder checkpoint's -> (value, "encoder"), else (None, None). An
    entry calibrated for another encoder is in another unit and is not in force (the server
    refuses it): the next in line stands in for it."""
    for s, source in ((site, "site"), (default_site, "default_site")):
        entry = store.entry(s, "day", kind) if s else None
        if entry is not None and entry["encoder_version"] == encoder_version:
            return float(entry["threshold"]), source
    t = encoder_meta.get({"verify": "threshold", "identify": "identify_threshold"}[kind])
    return (float(t), "encoder") if t is not None else (None, None)


def write_enrolled(res: dict, data_dir: str | Path | None, store: ThresholdStore | None = None) -> Path:
    """calibrate_enrolled's result (with site, kind and encoder_version) into the data folder's
    thresholds store (or `store`), as the site's day threshold of that kind."""
    store = store or ThresholdStore(data_dir)
    store.put(res["site"], "day", res["threshold"], res["encoder_version"], kind=res["kind"],
              far=res["far_on_enrolled"], tar=res["tar_on_enrolled"], target_far=res["target_far"],
              impostor_claims=res["impostor_claims"], genuine_claims=res["genuine_claims"], subjects=res["subjects"],
              source="enrolled", chosen=res["chosen"], enrolled_threshold=res["enrolled_threshold"],
              previous_threshold=res["previous_threshold"])
    return store.path
