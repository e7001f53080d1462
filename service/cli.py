"""The facegate command line (CONTRACT.md): `facegate COMMAND ... [--json]`.

stdout holds the result (JSON with --json); progress and logs go to stderr. Exit codes:
0 success, 1 a clean "no" (compare: not the same person), 2 an error, printed as
{"error": {"code": "<gRPC status name>", "message": "..."}}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


class CliError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _emit(obj: dict, as_json: bool):
    if as_json:
        print(json.dumps(obj))
    else:
        for k, v in obj.items():
            print(f"{k}: {v}")


class _DataAction(argparse.Action):
    """--data DIR [--people FILE]: a people list limits the --data folder given just before it."""

    def __call__(self, parser, ns, value, option_string=None):
        sets = getattr(ns, "data", None) or []
        if option_string == "--people":
            if not sets:
                parser.error("--people must follow the --data folder it limits")
            sets[-1]["people"] = value
        else:
            sets.append({"dir": value, "people": None})
        ns.data = sets


# ---------------------------------------------------------------------------------------- train
def cmd_train(a) -> int:
    from encoder.checkpoint import align_config_for, save_checkpoint
    from encoder.crop_cache import CropCache, build_cache, wait_for_cache
    from encoder.face_folders import list_person_folders, list_unlabelled, read_people_list
    from encoder.train import TrainConfig, run_training

    if not a.data:
        raise CliError("INVALID_ARGUMENT", "train needs at least one --data folder (one sub-folder per person)")
    photos = []
    for d in a.data:
        people = read_people_list(d["people"]) if d["people"] else None
        photos += list_person_folders(d["dir"], people)
    for d in a.unlabelled or []:
        photos += list_unlabelled(d)
    cfg = TrainConfig.resolve(a.config, encoder={"input_size": a.input_size, "backbone": a.backbone},
                              steps=a.steps, p=a.identities_per_batch, k=a.photos_per_identity,
                              extra=a.extra_per_batch, lr=a.lr, miner=a.miner, margin=a.margin, device=a.device,
                              seed=a.seed, threads=a.threads, eval_every=a.eval_every, ckpt_every=a.ckpt_every,
                              init_from=a.init_from)
    if cfg.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise CliError("FAILED_PRECONDITION", f"--device {cfg.device} asked for, but CUDA is not available here")
    print(f"{len(photos)} photos from {len(a.data)} labelled and {len(a.unlabelled or [])} unlabelled folders",
          file=sys.stderr)
    rank = int(os.environ.get("RANK", "0"))   # under torchrun: rank 0 builds the cache, the others wait for it
    align = align_config_for(cfg.encoder)      # the crops in the geometry the encoder reads
    if rank == 0:
        cache_dir = build_cache(photos, a.cache_dir, align, teacher=a.teacher, workers=a.workers)
    else:
        cache_dir = wait_for_cache(photos, a.cache_dir, align, teacher=a.teacher)
    cache = CropCache(cache_dir)
    init_version = None
    if cfg.init_from:      # read now: the file may be replaced (a release) while the training runs
        from encoder.checkpoint import read_meta

        init_version = ("dlib_resnet_v1 (face_recognition_models)" if cfg.init_from == "dlib"
                        else read_meta(cfg.init_from)["version"])
    model, summary = run_training(cfg, cache, a.out, resume=not a.no_resume)
    if rank != 0:
        return 0
    training = {
        "data": [{"dir": os.path.abspath(d["dir"]), "people": d["people"] and os.path.abspath(d["people"])}
                 for d in a.data],
        "unlabelled": [os.path.abspath(d) for d in a.unlabelled or []],
        "photos": len(photos), "cached": len(cache),
        "teacher": "dlib_resnet_v1 (face_recognition_models)" if a.teacher else None,
        "config": json.loads((Path(a.out) / "config.json").read_text()),
        "history": summary["history"],
    }
    if init_version:
        training["init_from"] = init_version
    export = Path(a.export) if a.export else Path(a.out) / "encoder.pt"
    ckpt = save_checkpoint(export, model, name=a.name, training=training, flip_average=a.flip_average,
                           precision=a.precision, metrics={"validation": summary["final"]})
    _emit({"checkpoint": str(export), "version": ckpt["version"], "steps": cfg.steps, **summary["final"]}, True)
    return 0


# ------------------------------------------------------------------------------- eval / calibrate
def _embedder(a):
    """The encoder to run: --checkpoint (default: the shipped one), or, with --release FILE, that
    release file (made a copy of --checkpoint when it does not exist yet)."""
    from encoder.checkpoint import CheckpointError, release_copy
    from encoder.embedder import Embedder

    try:
        if getattr(a, "release", None):
            a.checkpoint = str(release_copy(a.checkpoint, a.release))
        return Embedder.from_checkpoint(a.checkpoint)
    except CheckpointError as e:
        raise CliError("FAILED_PRECONDITION", str(e)) from None


def _check_pairs(a):
    if not Path(a.pairs).is_file():
        raise CliError("INVALID_ARGUMENT", f"pair list {a.pairs} does not exist")
    if not Path(a.root).is_dir():
        raise CliError("INVALID_ARGUMENT", f"--root {a.root} is not a folder")


def cmd_eval_pairs(a) -> int:
    from encoder.checkpoint import record_in_checkpoint
    from encoder.pair_eval import eval_pairs

    _check_pairs(a)
    if a.record and not a.release:
        raise CliError("INVALID_ARGUMENT", "--record NAME stores the results in a release file: give --release FILE")
    emb = _embedder(a)
    report = eval_pairs(emb, a.pairs, a.root, plot=a.plot)
    if a.record:
        record_in_checkpoint(a.release, metrics={a.record: {**report, "pair_list": Path(a.pairs).name}})
    _emit(report, a.json)
    return 0


def cmd_calibrate(a) -> int:
    """A threshold (day) or the night profile (night thresholds and TOO_DARK) for a target FAR,
    written to a data folder's thresholds store and/or a release file (service/calibration.py)."""
    from .calibration import calibrate_day, calibrate_night_profile, plot_curve, write_to_data_folder, write_to_release

    _check_pairs(a)
    if not 0 < a.target_far < 1:
        raise CliError("INVALID_ARGUMENT", f"--target-far must lie in (0, 1), got {a.target_far}")
    if not 0 < a.identify_far < 1:
        raise CliError("INVALID_ARGUMENT", f"--identify-far must lie in (0, 1), got {a.identify_far}")
    emb = _embedder(a)
    if a.profile == "night":
        from gates.daynight import DayNightGate

        try:
            gate = DayNightGate.load(a.daynight)
        except (FileNotFoundError, ValueError) as e:
            raise CliError("FAILED_PRECONDITION", str(e)) from None
        res = calibrate_night_profile(emb, gate, a.pairs, a.root, a.target_far, a.identify_far, a.site,
                                      min_tar=a.min_tar, seed=a.seed,
                                      cache_dir=Path(a.cache_dir) if a.cache_dir else None)
        if a.plot:
            plot_curve(res, a.plot, f"Darkened {Path(a.pairs).name}: encoder {emb.version}")
            res["plot"] = a.plot
    else:
        res = calibrate_day(emb, a.pairs, a.root, a.target_far, a.site, a.kind)
    if a.data_dir:
        res["written_to"] = str(write_to_data_folder(res, a.data_dir))
    if a.release:
        write_to_release(res, a.release)
        res["written_to_release"] = a.release
    _emit(res, a.json)
    return 0


def cmd_calibrate_enrolled(a) -> int:
    """A site's day threshold at a target FAR on its own people: the impostor claims of the data
    folder's enrolled templates, for the encoder in use; never looser than the site's threshold in
    force (service/calibration.py: calibrate_enrolled)."""
    from encoder.checkpoint import CheckpointError, read_meta
    from index.template_store import StoreError, TemplateStore

    from .calibration import calibrate_enrolled, threshold_in_force, write_enrolled
    from .errors import FacegateError
    from .index_layout import current_index_dir
    from .thresholds import ThresholdError, ThresholdStore

    if not 0 < a.target_far < 1:
        raise CliError("INVALID_ARGUMENT", f"--target-far must lie in (0, 1), got {a.target_far}")
    data = Path(a.data_dir)
    if not data.is_dir():
        raise CliError("INVALID_ARGUMENT", f"--data-dir {data} is not a folder")
    try:   # the encoder's version and defaults only: no model is built
        meta = read_meta(a.checkpoint)
    except CheckpointError as e:
        raise CliError("FAILED_PRECONDITION", str(e)) from None
    version = meta.get("version", "unversioned")
    try:
        store = TemplateStore(current_index_dir(data, create=False),
                              dim=int(meta.get("config", {}).get("embedding_dim", 128)))
    except FileNotFoundError as e:
        raise CliError("FAILED_PRECONDITION", f"no enrolled templates to calibrate on ({e}): enroll the site's "
                                              f"people first") from None
    except StoreError as e:
        raise CliError("FAILED_PRECONDITION", str(e)) from None
    try:
        subjects, vectors = store.vectors(version)
        others = sorted(store.encoder_versions() - {version})
    finally:
        store.close()
    if not subjects and others:
        raise CliError("FAILED_PRECONDITION", f"the templates of {data} were made by encoder {', '.join(others)}, "
                                              f"not {version}: calibrate with that --checkpoint, or reindex the "
                                              f"photo source with this one first")
    try:
        thresholds = ThresholdStore(data)
        previous, source = threshold_in_force(thresholds, a.site, a.kind, version, meta)
        res = calibrate_enrolled(vectors, subjects, a.target_far, previous)
        res = {"site": a.site, "kind": a.kind, "profile": "day", **res, "previous_source": source,
               "encoder_version": version}
        res["written_to"] = str(write_enrolled(res, data))
    except FacegateError as e:
        raise CliError(e.code, e.message) from None
    except ThresholdError as e:
        raise CliError("FAILED_PRECONDITION", str(e)) from None
    _emit(res, a.json)
    return 0


# ---------------------------------------------------------------------------------------- compare
def cmd_compare(a) -> int:
    """The shipped model at work: embeds each photo and prints the distance of every pair."""
    from encoder.images import ImageError, decode_image

    if len(a.photos) < 2:
        raise CliError("INVALID_ARGUMENT", "compare needs two or more photos")
    emb = _embedder(a)
    threshold = a.threshold if a.threshold is not None else emb.default_threshold
    crops_dir = Path(a.save_crops) if a.save_crops else None
    if crops_dir:
        crops_dir.mkdir(parents=True, exist_ok=True)
    vecs, reasons, saved = {}, {}, []
    for n, p in enumerate(a.photos):
        try:
            e = emb.embed(decode_image(p))
        except (ImageError, OSError) as err:
            raise CliError("INVALID_ARGUMENT", f"{p}: {err}") from None
        if crops_dir and e.alignment.crop is not None:     # what the network sees, as it sees it
            import cv2

            out_png = crops_dir / f"{n:03d}_{Path(p).stem}.png"
            cv2.imwrite(str(out_png), cv2.cvtColor(e.alignment.crop, cv2.COLOR_RGB2BGR))
            saved.append(str(out_png))
        row = {"path": p, "outcome": e.alignment.outcome, "detail": e.alignment.detail}
        if e.vector is not None:
            vecs[p] = e.vector
        else:
            reasons[p] = row["outcome"]
        if not a.json:
            print(f"{p}: {row['outcome']} {row['detail']}".rstrip(), file=sys.stderr)
    paths = list(vecs)
    pairs = []
    for i, p in enumerate(paths):
        for q in paths[i + 1:]:
            d = float(((vecs[p] - vecs[q]) ** 2).sum() ** 0.5)
            pairs.append({"a": p, "b": q, "distance": round(d, 4), "same": bool(threshold is not None and d <= threshold)})
    out = {"encoder_version": emb.version, "threshold": threshold, "faces": len(vecs),
           "rejected": [{"path": p, "reason": reasons[p]} for p in a.photos if p not in vecs],
           "pairs": pairs}
    if crops_dir:
        out["crops"] = saved
    if a.json:
        print(json.dumps(out))
    else:
        print(f"encoder {emb.version}, threshold {threshold}")
        for r in pairs:
            print(f"{r['distance']:.3f}  {'SAME    ' if r['same'] else 'DIFFERENT'}  {r['a']}  {r['b']}")
    return 0 if pairs and all(r["same"] for r in pairs) else 1


# ------------------------------------------------------------------------------ service commands
def cmd_serve(a) -> int:
    import logging

    from .errors import FacegateError
    from .server import serve
    from .settings import load_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    settings = load_settings(a.config, listen=a.listen, data_dir=a.data_dir, checkpoint=a.checkpoint,
                             workers=a.workers, max_queue=a.max_queue, batch_window_ms=a.batch_window_ms,
                             batch_max=a.batch_max)
    try:
        serve(settings)
    except FacegateError as e:
        raise CliError(e.code, e.message) from None
    return 0


def _client(a):
    from .client import Client

    return Client(a.server, timeout=a.timeout)


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise CliError("INVALID_ARGUMENT", f"cannot read {path}: {e.strerror}") from None


def cmd_verify(a) -> int:
    audio = _read(a.audio) if a.audio else b""
    r = _client(a).verify(a.subject, _read(a.photo), a.site or "", audio)
    _emit(r, a.json)
    return 0 if r["decision"] == "ACCEPT" else 1


def cmd_identify(a) -> int:
    audio = _read(a.audio) if a.audio else b""
    r = _client(a).identify(_read(a.photo), a.site or "", a.k or 0, audio)
    _emit(r, a.json)
    return 0 if r["subject"] is not None else 1


def cmd_cluster(a) -> int:
    r = _client(a).cluster([(p, _read(p)) for p in a.photos], a.k)
    _emit(r, a.json)
    return 0


def cmd_delete(a) -> int:
    _emit(_client(a).delete(a.subject), a.json)
    return 0


def cmd_site(a) -> int:
    """A site's policy in the data folder (read by the server at each request): does its door
    wake only on the trigger word, and does Verify refuse a photo of several faces or judge the central one?"""
    from .sites import SiteError, SiteStore

    store = SiteStore(a.data_dir)
    changes = {}
    if a.trigger_word is not None:
        changes["trigger_word"] = a.trigger_word == "on"
    if a.several_faces is not None:
        changes["several_faces"] = a.several_faces.replace("-", "_")
    if a.min_face_px is not None:
        changes["min_face_px"] = a.min_face_px
    try:
        policy = store.put(a.site, **changes) if changes else store.get(a.site)
    except SiteError as e:
        raise CliError("FAILED_PRECONDITION", str(e)) from None
    _emit({"site": a.site, "trigger_word": policy.trigger_word, "several_faces": policy.several_faces,
           "min_face_px": policy.min_face_px, "sites_file": str(store.path)}, a.json)
    return 0


def cmd_status(a) -> int:
    _emit(_client(a).status(), a.json)
    return 0


def cmd_enroll(a) -> int:
    from encoder.face_folders import IMAGE_SUFFIXES

    root = Path(a.dir)
    if not root.is_dir():
        raise CliError("INVALID_ARGUMENT", f"{root} is not a folder (expected DIR/<subject_id>/<photos>)")
    photos = [(d.name, p) for d in sorted(root.iterdir()) if d.is_dir()
              for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not photos:
        raise CliError("INVALID_ARGUMENT", f"no photos under {root}/<subject_id>/")
    summary = _client(a).enroll(photos)
    _emit(summary, a.json)
    return 0


def cmd_reindex(a) -> int:
    from .errors import FacegateError
    from .reindex import reindex
    from .server import load_gates
    from .settings import Settings

    try:   # as Enroll when serving: the shipped day/night gate judges TOO_DARK
        summary = reindex(a.photo_dir, a.data_dir, a.checkpoint, a.name, switch=not a.no_switch,
                          gates=load_gates(Settings(data_dir=a.data_dir)))
    except FacegateError as e:
        raise CliError(e.code, e.message) from None
    _emit(summary, a.json)
    return 0


def cmd_switch_index(a) -> int:
    from .index_layout import switch_index

    switch_index(a.data_dir, a.name)
    _emit({"data_dir": a.data_dir, "current": a.name}, a.json)
    return 0


def cmd_daynight(a) -> int:
    from encoder.images import ImageError, decode_image
    from gates.daynight import DayNightGate

    try:
        gate = DayNightGate.load(a.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        raise CliError("FAILED_PRECONDITION", str(e)) from None
    if a.too_dark is not None:
        gate.too_dark_light = a.too_dark
    else:   # as the server does for a site without its own: TOO_DARK is the encoder's (calibrate --profile night)
        from encoder.checkpoint import CheckpointError, read_meta

        try:
            level = read_meta(a.encoder).get("too_dark_light")
        except CheckpointError as e:
            raise CliError("FAILED_PRECONDITION", str(e)) from None
        if level is not None:
            gate.too_dark_light = float(level)
    for p in a.paths:
        try:
            r = gate.predict(decode_image(p))
        except (ImageError, OSError) as e:
            raise CliError("INVALID_ARGUMENT", f"{p}: {e}") from None
        row = {"path": p, "label": r.label, "p_night": round(r.p_night, 4), "light": round(r.light, 4),
               "too_dark": r.too_dark}
        print(json.dumps(row) if a.json else f"{p}: {r.label} (p_night {r.p_night:.3f}, light {r.light:.3f})")
    return 0


def cmd_trigger(a) -> int:
    from gates.trigger_word import AudioError, TriggerWordGate

    try:
        gate = TriggerWordGate.load(a.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        raise CliError("FAILED_PRECONDITION", str(e)) from None
    for p in a.paths:
        try:
            found = gate.predict(_read(p))
        except AudioError as e:
            raise CliError("INVALID_ARGUMENT", f"{p}: {e}") from None
        row = {"path": p, "detected": bool(found), "events": [{"t": e.t, "p": round(e.p, 4)} for e in found]}
        heard = ", ".join(f"{e.t:.2f} s (p {e.p:.3f})" for e in found) or "not heard"
        print(json.dumps(row) if a.json else f"{p}: {heard}")
    return 0


# -------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="facegate", description="face access control for a campus")
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--json", action="store_true", help="JSON only on stdout")
        p.add_argument("--checkpoint", default=None, help="encoder checkpoint (default: the shipped one)")

    t = sub.add_parser("train", help="triplet-loss training over folder-per-person data sets")
    t.add_argument("--data", action=_DataAction, metavar="DIR", help="DIR/<person>/<photos>; repeatable")
    t.add_argument("--people", action=_DataAction, metavar="FILE", help="limit the preceding --data to these people")
    t.add_argument("--unlabelled", action="append", metavar="DIR", help="a folder of unlabelled faces (distillation)")
    t.add_argument("--teacher", action="store_true", help="distil from dlib's ResNet (needs the teacher extra)")
    t.add_argument("--out", required=True, help="run folder: config, log, last.pt (resumes from it)")
    t.add_argument("--export", help="where to write the trained checkpoint (default OUT/encoder.pt)")
    t.add_argument("--name", default="facegate-face_resnet", help="version name of the exported checkpoint")
    t.add_argument("--config", help="a JSON TrainConfig; flags override it")
    t.add_argument("--cache-dir", default=".cache/facegate/crops")
    t.add_argument("--workers", type=int, default=2, help="processes for alignment")
    t.add_argument("--no-resume", action="store_true")
    t.add_argument("--flip-average", action="store_true",
                   help="the exported encoder embeds each face and its mirror image and averages them")
    # encoder.checkpoint.PRECISIONS, spelled out: the parser is built without importing torch
    t.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                   help="the arithmetic of the exported encoder: bfloat16 autocast is ~1.5x faster on CPUs "
                        "with AVX512-BF16 or AMX, and slower on others")
    t.add_argument("--backbone")
    t.add_argument("--input-size", type=int)
    # long names only: under torchrun, a flag like --p would be taken for one of torchrun's own
    t.add_argument("--identities-per-batch", type=int, help="P of the P x K batch")
    t.add_argument("--photos-per-identity", type=int, help="K of the P x K batch")
    t.add_argument("--extra-per-batch", type=int, help="photos drawn from everything, for distillation")
    for name, typ in [("steps", int), ("lr", float), ("margin", float), ("seed", int), ("threads", int),
                      ("eval-every", int), ("ckpt-every", int)]:
        t.add_argument(f"--{name}", type=typ)
    t.add_argument("--miner", choices=["semihard", "batchhard"])
    t.add_argument("--init-from", metavar="CHECKPOINT",
                   help="start from this checkpoint's weights (or 'dlib'): one config serves each restart of a phase")
    t.add_argument("--device", help="cpu, cuda, cuda:N")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval-pairs", help="verification accuracy on a pair list (LFW protocol)")
    e.add_argument("pairs")
    e.add_argument("--root", required=True)
    e.add_argument("--plot", help="write the ROC curve to this PNG")
    e.add_argument("--record", metavar="NAME", help="store the results under NAME in the --release file")
    e.add_argument("--release", metavar="FILE", help="the release file to evaluate and record in (made a copy of "
                                                     "--checkpoint when it does not exist yet)")
    common(e)
    e.set_defaults(func=cmd_eval_pairs)

    c = sub.add_parser("calibrate", help="the threshold that gives a target false-accept rate")
    c.add_argument("pairs")
    c.add_argument("--root", required=True)
    c.add_argument("--target-far", type=float, required=True)
    c.add_argument("--site", default="default")
    c.add_argument("--profile", default="day", choices=["day", "night"])
    c.add_argument("--kind", default="verify", choices=["verify", "identify"],
                   help="identify: the stricter threshold of a 1:N search (calibrate it for a smaller FAR)")
    c.add_argument("--data-dir", help="write the threshold to this data folder's thresholds store")
    c.add_argument("--release", metavar="FILE",
                   help="make it the encoder's default in this release file (made a copy of --checkpoint when it "
                        "does not exist yet; the packaged checkpoint itself is never rewritten)")
    c.add_argument("--identify-far", type=float, default=1e-4,
                   help="night profile: the target FAR of Identify's night threshold (calibrated with Verify's)")
    c.add_argument("--min-tar", type=float, default=None,
                   help="night profile: the site's target TAR; below the light level where it is missed, TOO_DARK "
                        "(default: 0.8 x the TAR reached by day)")
    c.add_argument("--daynight", help="night profile: the day/night gate checkpoint (default: the shipped one)")
    c.add_argument("--seed", type=int, default=0, help="night profile: the seed of the darkening")
    c.add_argument("--plot", help="night profile: write the TOO_DARK curve here (PNG)")
    c.add_argument("--cache-dir", help="night profile: where the darkened probes' distances are kept "
                                       "(default ~/.cache/facegate/night)")
    common(c)
    c.set_defaults(func=cmd_calibrate)

    ce = sub.add_parser("calibrate-enrolled", help="a site's threshold for a target false-accept rate among its "
                                                   "own enrolled people (no labelled pairs needed)")
    ce.add_argument("--site", required=True)
    ce.add_argument("--target-far", type=float, required=True)
    ce.add_argument("--kind", default="verify", choices=["verify", "identify"],
                    help="identify: the stricter threshold of a 1:N search (calibrate it for a smaller FAR)")
    ce.add_argument("--data-dir", required=True,
                    help="the server's data folder: its enrolled templates, and the thresholds store written")
    common(ce)
    ce.set_defaults(func=cmd_calibrate_enrolled)

    sv = sub.add_parser("serve", help="start the gRPC service")
    sv.add_argument("--config", help="a TOML settings file (see service/settings.py)")
    sv.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:50051)")
    sv.add_argument("--data-dir", help="the data folder: templates, thresholds, audit log (default ./data)")
    sv.add_argument("--checkpoint", help="encoder checkpoint (default: the shipped one)")
    sv.add_argument("--workers", type=int, help="requests running the face models at once (default 2)")
    sv.add_argument("--max-queue", type=int, help="camera requests allowed to wait for a worker; one more is "
                                                  "answered RESOURCE_EXHAUSTED at once (default 16)")
    sv.add_argument("--batch-window-ms", type=float, help="micro-batching: how long a batch waits for more "
                                                          "requests (default 3)")
    sv.add_argument("--batch-max", type=int, help="micro-batching: requests per batch (default 1: off)")
    sv.set_defaults(func=cmd_serve)

    def client(p):
        p.add_argument("--server", required=True, help="HOST:PORT of a running facegate serve")
        p.add_argument("--timeout", type=float, default=60.0, help="seconds per call")
        p.add_argument("--json", action="store_true", help="JSON only on stdout")

    en = sub.add_parser("enroll", help="enroll DIR/<subject_id>/<photos> (resumable: send it again)")
    en.add_argument("dir")
    client(en)
    en.set_defaults(func=cmd_enroll)
    ve = sub.add_parser("verify", help="is this the subject's face? exit 0 ACCEPT, 1 REJECT")
    ve.add_argument("photo")
    ve.add_argument("--subject", required=True)
    ve.add_argument("--site")
    ve.add_argument("--audio", help="WAV bytes for a site that asks for the trigger word")
    client(ve)
    ve.set_defaults(func=cmd_verify)
    idf = sub.add_parser("identify", help="who is this? exit 0 identified, 1 unknown")
    idf.add_argument("photo")
    idf.add_argument("--site")
    idf.add_argument("--k", type=int)
    idf.add_argument("--audio")
    client(idf)
    idf.set_defaults(func=cmd_identify)
    cl = sub.add_parser("cluster", help="group photos by person (k = 0: choose k)")
    cl.add_argument("photos", nargs="+")
    cl.add_argument("--k", type=int, default=0)
    client(cl)
    cl.set_defaults(func=cmd_cluster)
    de = sub.add_parser("delete", help="remove a subject's templates")
    de.add_argument("--subject", required=True)
    client(de)
    de.set_defaults(func=cmd_delete)
    si = sub.add_parser("site", help="a site's policy: the trigger word; a photo of several faces")
    si.add_argument("site")
    si.add_argument("--data-dir", default="data", help="the server's data folder (default ./data)")
    si.add_argument("--trigger-word", choices=["on", "off"], help="require the word \"activate\" (omit: show)")
    si.add_argument("--several-faces", choices=["refuse", "central-face"],
                    help="Verify on a photo of several faces of similar size: refuse it (MULTIPLE_FACES, the "
                         "default) or compare the central one with the card's owner (omit: show)")
    si.add_argument("--min-face-px", type=int, metavar="PX",
                    help="the smallest face the door cares about (default 40; a kiosk whose users stand close: "
                         "80): smaller faces are FACE_TOO_SMALL, and larger values make detection cheaper")
    si.add_argument("--json", action="store_true")
    si.set_defaults(func=cmd_site)

    st = sub.add_parser("status", help="subjects, templates, encoder and index versions")
    client(st)
    st.set_defaults(func=cmd_status)

    ri = sub.add_parser("reindex", help="upgrade: re-enroll a photo source with an encoder into a new index "
                                         "version, then switch to it atomically")
    ri.add_argument("photo_dir", help="the photo source: DIR/<subject_id>/<photos>")
    ri.add_argument("--data-dir", required=True)
    ri.add_argument("--name", help="the new index version's name (default: the encoder version)")
    ri.add_argument("--no-switch", action="store_true", help="build it, but leave CURRENT as it is")
    common(ri)
    ri.set_defaults(func=cmd_reindex)
    sw = sub.add_parser("switch-index", help="point the data folder at another index version (atomic)")
    sw.add_argument("name")
    sw.add_argument("--data-dir", required=True)
    sw.add_argument("--json", action="store_true")
    sw.set_defaults(func=cmd_switch_index)

    dn = sub.add_parser("daynight", help="day or night, per photo (the light-profile gate)")
    dn.add_argument("paths", nargs="+")
    dn.add_argument("--checkpoint", help="day/night checkpoint (default: the shipped one)")
    dn.add_argument("--too-dark", type=float, help="the light level below which a photo is too dark "
                                                   "(default: the encoder checkpoint's, calibrated for it)")
    dn.add_argument("--encoder", help="the encoder checkpoint whose TOO_DARK level applies (default: the shipped one)")
    dn.add_argument("--json", action="store_true", help="one JSON object per line")
    dn.set_defaults(func=cmd_daynight)

    tw = sub.add_parser("trigger", help="was \"activate\" said, and when, per WAV file (the trigger-word gate)")
    tw.add_argument("paths", nargs="+")
    tw.add_argument("--checkpoint", help="trigger-word checkpoint (default: the shipped one)")
    tw.add_argument("--json", action="store_true", help="one JSON object per line")
    tw.set_defaults(func=cmd_trigger)

    m = sub.add_parser("compare", help="embed photos and print the distance of every pair")
    m.add_argument("photos", nargs="+")
    m.add_argument("--threshold", type=float, help="(default: the checkpoint's calibrated threshold)")
    m.add_argument("--save-crops", metavar="DIR", help="write each photo's aligned face, as the encoder sees it, "
                   "to DIR as NNN_<photo>.png")
    common(m)
    m.set_defaults(func=cmd_compare)
    return ap


def main(argv: list[str] | None = None) -> int:
    from .client import RpcFailed

    a = build_parser().parse_args(argv)
    try:
        return a.func(a)
    except (CliError, RpcFailed) as e:
        print(json.dumps({"error": {"code": e.code, "message": e.message}}))
        return 2
    except (FileNotFoundError, ValueError) as e:
        print(json.dumps({"error": {"code": "INVALID_ARGUMENT", "message": str(e)}}))
        return 2


if __name__ == "__main__":
    sys.exit(main())
