"""The door run: a running server, driven through the CLI exactly as a camera client would.

Enrolls N people of pairs_devtest.tsv who have two or more photos (their first photo; the
others are probes), then for every probe: Verify as its owner (a false reject if REJECT) and
as another enrolled person, or as --impostors others (a false accept if ACCEPT), and Identify
it (identified as the right person, as a wrong one, or "unknown"); then Identify photos of N
other DevTest people who were never enrolled (strangers: "unknown" is right). Rates come with
their 95% Wilson intervals; each false reject is listed with its photo, reason and distance (a
photo refused before comparison, MULTIPLE_FACES or no usable face, has a reason and no distance).

Verify is also scored per transaction, as the kiosk of CONTRACT.md works: a photo refused for a
reason that asks for a retake (no usable face, two faces, too small, too dark, low quality) is
followed by one retake, the same person's next photo (never the enrolment photo; none left: the
transaction fails), for the owner and for impostors alike. NO_MATCH is final (back to the card).
The per-call figures above stay the primary ones; the per-transaction ones sit beside them.
At a site whose policy judges the central face of a photo of several (service.sites), the
claims decided that way are counted apart too (several_faces_judged). Prints one JSON object and
writes a PNG of the verify distances beside it.

  python bench/door_run.py --server 127.0.0.1:50051 [--people 100] [--probes 3] [--impostors 1] [--out bench/out/door]
                           [--site door --site-policy OUT/site.json]
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from facegate.reasons import Reason  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def cli(facegate: str, *args: str) -> tuple[int, dict]:
    p = subprocess.run([facegate, *args, "--json"], capture_output=True, text=True, timeout=300)
    out = json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else {}
    return p.returncode, out


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    """The 95% Wilson score interval of a rate k/n (sound near 0 and 1, unlike k/n +- 2 sd)."""
    if n == 0:
        return [0.0, 1.0]
    p = k / n
    mid, half = (p + z * z / (2 * n)), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [round(float((mid - half) / (1 + z * z / n)), 4), round(float((mid + half) / (1 + z * z / n)), 4)]


def rates_at(t: float, genuine_d: list[float], n_genuine: int, impostor_d: list[float], n_impostor: int) -> dict:
    """FRR and FAR had the threshold been t, over all the verify calls: a call that measured no
    distance (no usable face in the probe) is a reject at any threshold, as it was in the run."""
    g, i = np.asarray(genuine_d, float), np.asarray(impostor_d, float)
    return {"threshold": t, "frr": round(float(((g > t).sum() + n_genuine - len(g)) / max(n_genuine, 1)), 4),
            "far": round(float((i <= t).sum() / max(n_impostor, 1)), 4)}


# the reasons on which the kiosk asks for another photo (CONTRACT.md); NO_MATCH sends the student to the card
RETAKE_REASONS = tuple(r.value for r in (Reason.NO_FACE, Reason.MULTIPLE_FACES, Reason.FACE_TOO_SMALL,
                                          Reason.LOW_QUALITY, Reason.TOO_DARK))
NO_USABLE_FACE = tuple(r.value for r in (Reason.NO_FACE, Reason.MULTIPLE_FACES, Reason.FACE_TOO_SMALL))


def retake_photo(photos: list[str], refused: str, probes: int, enrolled: int = 1) -> str | None:
    """The photo a retake shows: the person's first photo not used as a probe, else another of their
    probes; never an enrolment photo (the first `enrolled`) nor the refused one. None: they have no other photo."""
    k = enrolled
    return next((p for p in photos[k + probes:] + photos[k:k + probes] if p != refused), None)


def detected(r: dict) -> str | None:
    """What the detect stage of a verify answer found (OK, MULTIPLE_FACES...), None if it did not run."""
    return next((s["outcome"] for s in r.get("stages", []) if s["name"] == "detect"), None)


def judged_on_a_photo_of_several(r: dict) -> bool:
    """A verify answer that compared the central face of a photo of several with the card (site
    policy central_face), where the default policy refuses the photo."""
    return detected(r) == Reason.MULTIPLE_FACES.value and any(s["name"] == "match" for s in r.get("stages", []))


def folder_people(root: Path) -> dict[str, list[str]]:
    """A folder-per-person set (root/<person>/<photos>): every person and their photos."""
    return {d.name: sorted(str(p) for p in d.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            for d in sorted(root.iterdir()) if d.is_dir()}


def devtest_people(lfw: Path) -> dict[str, list[str]]:
    names = set()
    for line in (lfw / "pairs_devtest.tsv").read_text().splitlines():
        a, b, _, _ = line.split("\t")
        names.update({a.split("/")[1], b.split("/")[1]})
    return {n: sorted(str(p) for p in (lfw / "images" / n).glob("*.jpg")) for n in sorted(names)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", required=True)
    ap.add_argument("--lfw", default=str(ROOT.parent / "shared/data/faces/lfw"))
    ap.add_argument("--folder", help="a folder-per-person set to run on instead of LFW's DevTest people (for "
                                     "example faces/shift/bollywood): half its people at most are enrolled, "
                                     "the others are the strangers")
    ap.add_argument("--people", type=int, default=100)
    ap.add_argument("--enroll-photos", type=int, default=1, help="ID photos enrolled per person (the first ones)")
    ap.add_argument("--probes", type=int, default=3, help="probe photos per enrolled person, at most")
    ap.add_argument("--impostors", type=int, default=1,
                    help="claims of other enrolled people's cards per probe (more: a tighter FAR estimate)")
    ap.add_argument("--strangers-photos", type=int, default=2, help="photos per stranger, at most")
    ap.add_argument("--site", default="")
    ap.add_argument("--site-policy", help="the site's policy as `facegate site SITE --json` printed it, recorded "
                                          "in the output")
    ap.add_argument("--calibrate-enrolled", nargs=2, type=float, metavar=("F_VERIFY", "F_IDENTIFY"),
                    help="after enrolling, set the site's Verify and Identify thresholds on its own enrolled "
                         "people (facegate calibrate-enrolled, needs --data-dir): the site calibrated on its population")
    ap.add_argument("--data-dir", help="the server's data folder (for --calibrate-enrolled)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--facegate", default=str(ROOT / ".venv/bin/facegate"))
    ap.add_argument("--out", default=str(ROOT / "bench/out/door"))
    a = ap.parse_args()
    # which encoder, computed how, the figures below belong to (the server's own word)
    rc, status = cli(a.facegate, "status", "--server", a.server)
    if rc != 0:
        sys.exit(f"status failed: {status}")
    rng = random.Random(a.seed)
    base = Path(a.folder) if a.folder else Path(a.lfw)
    people = folder_people(base) if a.folder else devtest_people(base)
    if a.folder:
        a.people = min(a.people, len(people) // 2)
    k = a.enroll_photos
    multi = [n for n, ps in people.items() if len(ps) >= k + 1]
    rng.shuffle(multi)
    # candidates beyond N stand in for people whose ID photos are all refused (no usable face);
    # the extras accepted beyond N are deleted again, so exactly N are enrolled
    candidates = multi[:a.people + max(0, min(30, len(people) - 2 * a.people))]
    strangers = [n for n in people if n not in set(candidates)]
    rng.shuffle(strangers)
    strangers = strangers[:a.people]

    gallery = Path(tempfile.mkdtemp(prefix="fg-door-"))
    try:
        for n in candidates:
            (gallery / n).mkdir()
            for photo in people[n][:k]:
                shutil.copy(photo, gallery / n)
        t0 = time.time()
        rc, summary = cli(a.facegate, "enroll", str(gallery), "--server", a.server)
        if rc != 0:
            sys.exit(f"enroll failed: {summary}")
        refused = defaultdict(int)
        for r in summary["rejected"]:
            refused[Path(r["path"]).parent.name] += 1
        accepted = [n for n in candidates if refused[n] < k]        # one ID photo of theirs at least
        enrolled, extras = accepted[:a.people], accepted[a.people:]
        for n in extras:
            cli(a.facegate, "delete", "--subject", n, "--server", a.server)
    finally:
        shutil.rmtree(gallery, ignore_errors=True)
    site = ["--site", a.site] if a.site else []
    enrolled_calibration = []
    if a.calibrate_enrolled:
        if not (a.site and a.data_dir):
            sys.exit("--calibrate-enrolled needs --site and --data-dir")
        for kind, far in zip(("verify", "identify"), a.calibrate_enrolled):
            rc, r = cli(a.facegate, "calibrate-enrolled", "--site", a.site, "--kind", kind, "--target-far", str(far),
                        "--data-dir", a.data_dir)
            if rc != 0 and kind == "verify":
                sys.exit(f"calibrate-enrolled failed: {r}")
            enrolled_calibration.append({"kind": kind, **r})    # Identify's may be refused (too few claims
            # for its FAR): the site keeps the threshold it has, and the refusal is recorded
    counts = defaultdict(int)
    genuine_d, impostor_d = [], []
    false_rejects = []   # each owner turned away: which photo, why (a refusal has a reason, no distance)
    txn_false_rejects = []   # the same, per transaction (a refusal, then its retake)

    def ask(*args: str) -> tuple[int, dict]:
        """One camera-client call at the site, counted."""
        counts["cli_calls"] += 1
        return cli(a.facegate, *args, "--server", a.server, *site)

    def rel(photo: str) -> str:
        return str(Path(photo).relative_to(base))

    verify_threshold = None
    for i, n in enumerate(enrolled):
        for probe in people[n][k:k + a.probes]:
            others = [enrolled[(i + 1 + j) % len(enrolled)]
                      for j in rng.sample(range(len(enrolled) - 1), min(a.impostors, len(enrolled) - 1))]
            retake = retake_photo(people[n], probe, a.probes, k)
            rc, r = ask("verify", probe, "--subject", n)
            if r.get("threshold") is not None and (r.get("light_profile") or "day") == "day" \
                    and detected(r) == "OK":
                verify_threshold = r["threshold"]
            if judged_on_a_photo_of_several(r):
                counts["several_genuine"] += 1
                counts["several_genuine_accepted"] += rc == 0
            if r.get("reason") in NO_USABLE_FACE:
                counts["probe_no_usable_face"] += 1
            counts["genuine"] += 1
            counts["false_reject"] += rc != 0
            if rc != 0:
                false_rejects.append({"probe": rel(probe), "rc": rc,
                                      "decision": r.get("decision"), "reason": r.get("reason") or None,
                                      "distance": r.get("distance")})
            if r.get("distance") is not None:
                genuine_d.append(r["distance"])
            txn_rc, txn_r, shown = rc, r, None
            if r.get("reason") in RETAKE_REASONS:
                counts["txn_genuine_retakes"] += 1
                if retake is None:
                    counts["txn_genuine_no_retake_photo"] += 1
                else:
                    txn_rc, txn_r = ask("verify", retake, "--subject", n)
                    shown = rel(retake)
            if txn_rc != 0:
                txn_false_rejects.append({"probe": rel(probe), "retake": shown,
                                          "reason": txn_r.get("reason") or None, "distance": txn_r.get("distance")})
            counts["txn_false_reject"] += txn_rc != 0
            for other in others:
                rc, r = ask("verify", probe, "--subject", other)
                counts["impostor"] += 1
                counts["false_accept"] += rc == 0
                if judged_on_a_photo_of_several(r):
                    counts["several_impostor"] += 1
                    counts["several_impostor_accepted"] += rc == 0
                if r.get("distance") is not None:
                    impostor_d.append(r["distance"])
                if r.get("reason") in RETAKE_REASONS and retake is not None:
                    counts["txn_impostor_retakes"] += 1
                    rc, _ = ask("verify", retake, "--subject", other)
                counts["txn_false_accept"] += rc == 0
            rc, r = ask("identify", probe)
            counts["identify_enrolled"] += 1
            if r.get("subject") == n:
                counts["identified_right"] += 1
            elif r.get("subject"):
                counts["identified_wrong"] += 1
            else:
                counts["enrolled_unknown"] += 1
            threshold = r.get("threshold")
        print(f"{i + 1}/{len(enrolled)} people probed", file=sys.stderr)
    for n in strangers:
        for photo in people[n][:a.strangers_photos]:
            rc, r = ask("identify", photo)
            counts["strangers"] += 1
            counts["strangers_unknown"] += r.get("subject") is None and rc == 1
    res = {
        "people_from": str(base) if a.folder else "LFW DevTest (pairs_devtest.tsv)", "enroll_photos": k,
        "enrolled_people": len(enrolled), "enroll": {k: summary[k] for k in ("accepted", "already_enrolled")}
        | {"rejected": len(summary["rejected"]), "candidates": len(candidates), "deleted_extras": len(extras),
           "rejected_reasons": sorted({r["reason"] for r in summary["rejected"]})},
        "verify_genuine": counts["genuine"], "verify_impostor": counts["impostor"],
        "verify_frr": round(counts["false_reject"] / max(counts["genuine"], 1), 4),
        "verify_far": round(counts["false_accept"] / max(counts["impostor"], 1), 4),
        # 95% Wilson intervals: a few hundred calls pin a rate to a few points, no closer
        "verify_frr_95ci": wilson(counts["false_reject"], counts["genuine"]),
        "verify_far_95ci": wilson(counts["false_accept"], counts["impostor"]),
        "probes_without_usable_face": counts["probe_no_usable_face"],
        "site_policy": json.loads(Path(a.site_policy).read_text()) if a.site_policy else None,
        "site_calibrated_on_enrolled": enrolled_calibration or None,
        # claims on a photo of several faces of similar size decided on its central face
        "several_faces_judged": {k: counts[f"several_{k}"] for k in
                                   ("genuine", "genuine_accepted", "impostor", "impostor_accepted")},
        "verify_per_transaction": {
            "retake_reasons": list(RETAKE_REASONS),
            "frr": round(counts["txn_false_reject"] / max(counts["genuine"], 1), 4),
            "far": round(counts["txn_false_accept"] / max(counts["impostor"], 1), 4),
            "frr_95ci": wilson(counts["txn_false_reject"], counts["genuine"]),
            "far_95ci": wilson(counts["txn_false_accept"], counts["impostor"]),
            "genuine_retakes": counts["txn_genuine_retakes"],
            "genuine_without_retake_photo": counts["txn_genuine_no_retake_photo"],
            "impostor_retakes": counts["txn_impostor_retakes"],
            "false_rejects": txn_false_rejects,
        },
        "verify_false_rejects": false_rejects,
        "identify_enrolled_probes": counts["identify_enrolled"],
        "identified_right_rate": round(counts["identified_right"] / max(counts["identify_enrolled"], 1), 4),
        "identified_wrong_rate": round(counts["identified_wrong"] / max(counts["identify_enrolled"], 1), 4),
        "enrolled_unknown_rate": round(counts["enrolled_unknown"] / max(counts["identify_enrolled"], 1), 4),
        "stranger_photos": counts["strangers"],
        "strangers_unknown_95ci": wilson(counts["strangers_unknown"], counts["strangers"]),
        "strangers_unknown_rate": round(counts["strangers_unknown"] / max(counts["strangers"], 1), 4),
        "identify_threshold": threshold if counts["identify_enrolled"] else None,
        "cli_calls": counts["cli_calls"], "seconds": round(time.time() - t0, 1),
        "encoder_version": status.get("encoder_version"), "encoder_arithmetic": status.get("encoder_arithmetic"),
        "verify_threshold": verify_threshold,
        # the same verify calls' distances judged at other thresholds (derived, not separate runs):
        # multiples of the site's day threshold, since each encoder has its own distance scale
        "verify_at_other_thresholds": [
            rates_at(round(verify_threshold * m, 4), genuine_d, counts["genuine"], impostor_d, counts["impostor"])
            for m in (0.8, 0.9, 1.1, 1.2, 1.3, 1.4)] if verify_threshold else [],
        # the first attempts' measured distances, for other cuts than these (a refusal has none)
        "verify_distances": {"owner": [round(d, 4) for d in genuine_d], "impostor": [round(d, 4) for d in impostor_d]},
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.with_suffix(".json")).write_text(json.dumps(res, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.hist(genuine_d, bins=30, alpha=0.6, label="owner's probe")
        ax.hist(impostor_d, bins=30, alpha=0.6, label="someone else's card")
        if verify_threshold:
            ax.axvline(verify_threshold, color="k", ls="--", lw=1, label=f"site threshold {verify_threshold:.3f}")
        ax.set_xlabel("distance (Euclidean, unit vectors)")
        ax.set_ylabel("verify calls")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out.with_suffix(".png"), dpi=110)
        res["plot"] = str(out.with_suffix(".png"))
    except ImportError:
        pass
    print(json.dumps(res))


if __name__ == "__main__":
    main()
