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
    if a.store:
        res["written_to"] = str(write_to_data_folder(res, None, store=_shared_store(a.store).thresholds))
    elif a.data_dir:
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
    from encoder.score_norm import ScoreNorm
    from index.template_store import StoreError, TemplateStore

    from .calibration import calibrate_enrolled, threshold_in_force, write_enrolled
    from .errors import FacegateError
    from .index_layout import current_index_dir
    from .settings import Settings
    from .thresholds import ThresholdError, ThresholdStore

    if not 0 < a.target_far < 1:
        raise CliError("INVALID_ARGUMENT", f"--target-far must lie in (0, 1), got {a.target_far}")
    if not (a.data_dir or a.store):
        raise CliError("INVALID_ARGUMENT", "name the enrolled templates: --data-dir DIR or --store postgresql://...")
    data = Path(a.data_dir) if not a.store else a.store
    if not a.store and not data.is_dir():
        raise CliError("INVALID_ARGUMENT", f"--data-dir {data} is not a folder")
    try:   # the encoder's version and defaults only: no model is built
        meta = read_meta(a.checkpoint)
    except CheckpointError as e:
        raise CliError("FAILED_PRECONDITION", str(e)) from None
    version = meta.get("version", "unversioned")
    dim = int(meta.get("config", {}).get("embedding_dim", 128))
    try:
        shared = _shared_store(a.store, dim) if a.store else None
        store = shared.templates if shared else TemplateStore(current_index_dir(data, create=False), dim=dim)
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
        raise CliError("FAILED_PRECONDITION", f"the templates of {shared.location if shared else data} were made by encoder {', '.join(others)}, "
                                              f"not {version}: calibrate with that --checkpoint, or reindex the "
                                              f"photo source with this one first")
    try:
        thresholds = shared.thresholds if shared else ThresholdStore(data)
        previous, source = threshold_in_force(thresholds, a.site, a.kind, version, meta,
                                              default_site=Settings().default_site)
        res = calibrate_enrolled(vectors, subjects, a.target_far, previous, norm=ScoreNorm.from_meta(meta))
        res = {"site": a.site, "kind": a.kind, "profile": "day", **res, "previous_source": source,
               "encoder_version": version}
        res["written_to"] = str(write_enrolled(res, data, store=thresholds))
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
    from encoder.score_norm import scorer

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
            # Verify's distance: normalised against the release's cohort where it has one
            d = float(scorer(emb.norm)(vecs[p][None], vecs[q][None])[0])
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
def _shared_store(url: str, dim: int = 128):
    """A CLI command's --store (PostgreSQL), open until the command exits."""
    import atexit

    from index.template_store import StoreError

    from .errors import FacegateError
    from .stores import open_stores_at

    try:
        stores = open_stores_at(store=url, dim=dim, follow=False)
    except StoreError as e:
        raise CliError("FAILED_PRECONDITION", str(e)) from None
    except FacegateError as e:
        raise CliError(e.code, e.message) from None
    atexit.register(stores.close)
    return stores


def cmd_serve(a) -> int:
    from .auth import check_listen, read_tls_dir
    from .errors import FacegateError
    from .logs import configure_logging
    from .settings import load_settings

    configure_logging()                   # JSON lines on stderr (service/logs.py)
    settings = load_settings(a.config, listen=a.listen, data_dir=a.data_dir, checkpoint=a.checkpoint,
                             tls_dir=a.tls_dir, insecure=a.insecure, metrics_listen=a.metrics_listen,
                             store=a.store, device=a.device, health_listen=a.health_listen,
                             index_kind=a.index_kind, workers=a.workers, max_queue=a.max_queue,
                             large_photo_pixels=a.large_photo_pixels, batch_window_ms=a.batch_window_ms,
                             batch_max=a.batch_max)
    try:
        check_listen(settings.listen, settings.tls_dir, settings.insecure)    # at once, before torch loads
        if settings.tls_dir:
            read_tls_dir(settings.tls_dir)
        from .server import serve

        serve(settings)
    except FacegateError as e:
        raise CliError(e.code, e.message) from None
    return 0


def _client(a):
    from .client import Client

    return Client(a.server, timeout=a.timeout, tls_dir=a.tls_dir, client=a.client)


def cmd_health(a) -> int:
    """The standard grpc.health.v1 Check: exit 0 SERVING, 1 any other answer, 2 no answer."""
    from .health import SERVING, check

    status = check(a.server, a.service, a.timeout, getattr(a, "tls_dir", None), getattr(a, "client", None))
    _emit({"server": a.server, "service": a.service, "status": status}, a.json)
    return 0 if status == SERVING else 1


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
    wake only on the trigger word, and does Verify refuse a photo of several faces or judge the central one?
    Without a site: which sites have a policy or thresholds of their own (the others follow the
    default site's)."""
    from dataclasses import asdict

    from .settings import Settings
    from .sites import SiteError, SiteStore, sites_of_their_own
    from .thresholds import ThresholdError, ThresholdStore

    default = Settings().default_site
    if a.store:
        stores = _shared_store(a.store)
        store, thresholds_store = stores.sites, stores.thresholds
    else:
        store, thresholds_store = SiteStore(a.data_dir), ThresholdStore(a.data_dir)
    try:
        if a.site is None:
            if a.trigger_word is not None or a.several_faces is not None or a.min_face_px is not None:
                raise CliError("INVALID_ARGUMENT", "name the site to change: facegate site SITE --trigger-word ...")
            _emit({"default_site": default, "sites": sites_of_their_own(store, thresholds_store),
                   "sites_file": str(store.path)}, a.json)
            return 0
        changes = {}
        if a.trigger_word is not None:
            changes["trigger_word"] = a.trigger_word == "on"
        if a.several_faces is not None:
            changes["several_faces"] = a.several_faces.replace("-", "_")
        if a.min_face_px is not None:
            changes["min_face_px"] = a.min_face_px
        policy, source = store.in_force(a.site, default)
        if changes:     # a site's first policy of its own starts from the one its doors follow now
            policy, source = store.put(a.site, **{**asdict(policy), **changes}), a.site
        thresholds = thresholds_store.own().get(a.site, [])
    except (SiteError, ThresholdError) as e:
        raise CliError("FAILED_PRECONDITION", str(e)) from None
    _emit({"site": a.site, "trigger_word": policy.trigger_word, "several_faces": policy.several_faces,
           "policy_of": source, "thresholds": thresholds,      # its own; the others are the default site's
           "min_face_px": policy.min_face_px, "default_site": default, "sites_file": str(store.path)}, a.json)
    return 0


def cmd_certs(a) -> int:
    """The private CA of mutual TLS (service/certs.py): `certs init DIR`, `certs issue DIR NAME`."""
    from .certs import CertError, init, issue

    try:
        if a.certs_command == "init":
            out = init(a.dir, a.host or [], days=a.days)
        else:
            out = issue(a.dir, a.name, a.role, a.site, days=a.days, force=a.force)
    except CertError as e:
        raise CliError(e.code, e.message) from None
    _emit(out, a.json)
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


def cmd_loadtest(a) -> int:
    """Cameras hammering a running server (service/loadtest.py): throughput, latency, errors, stages."""
    import asyncio

    from .errors import FacegateError
    from .loadtest import LoadConfig, default_photos, load_photos, parse_size, plot, run_load, summarise, to_frames

    config = LoadConfig(rpc=a.rpc, cameras=a.cameras, seconds=a.seconds, rate=a.rate, subject=a.subject,
                        deadline_ms=a.deadline_ms, warmup_s=a.warmup, site=a.site or "")
    try:
        config.check()
        size = parse_size(a.frames) if a.frames else None
        photos = load_photos(a.photos, a.max_photos) if a.photos else default_photos()
        if size:
            photos = to_frames(photos, size)
        record = asyncio.run(run_load(a.server, photos, config, a.tls_dir, a.client))
    except FacegateError as e:
        raise CliError(e.code, e.message) from None
    summary = summarise(record, config, photos=len(photos), frames=a.frames)
    if summary["errors"].get("NOT_FOUND"):
        print(f"loadtest: {summary['errors']['NOT_FOUND']} Verify requests claimed a subject that is not enrolled: "
              f"enroll it first (`facegate enroll DIR --server {a.server}`) or name one with --subject",
              file=sys.stderr)
    if a.plot:
        plot(record, config, summary, a.plot)
        summary["plot"] = a.plot
    _emit(summary, a.json)
    return 0


def cmd_reindex(a) -> int:
    from .errors import FacegateError
    from .reindex import reindex
    from .server import load_gates
    from .settings import Settings

    if not (a.data_dir or a.store):
        raise CliError("INVALID_ARGUMENT", "name the store to reindex: --data-dir DIR or --store postgresql://...")
    try:   # as Enroll when serving: the shipped day/night gate judges TOO_DARK
        summary = reindex(a.photo_dir, a.data_dir, a.checkpoint, a.name, switch=not a.no_switch,
                          gates=load_gates(Settings()), store_url=a.store)
    except FacegateError as e:
        raise CliError(e.code, e.message) from None
    _emit(summary, a.json)
    return 0


def cmd_switch_index(a) -> int:
    from .index_layout import switch_index

    switch_index(a.data_dir, a.name)
    _emit({"data_dir": a.data_dir, "current": a.name}, a.json)
    return 0


def cmd_audit_verify(a) -> int:
    """Exit 0: the chain is intact; 1: a line was edited, removed or reordered (named); 2: an error."""
    from index.template_store import StoreError

    from .audit import AuditError, open_audit_lines, verify_chain
    from .errors import FacegateError

    if bool(a.data_dir) == bool(a.store):
        raise CliError("INVALID_ARGUMENT", "give one of --data-dir D (its audit.jsonl) or --store URL")
    if a.data_dir and not Path(a.data_dir).is_dir():
        raise CliError("INVALID_ARGUMENT", f"--data-dir {a.data_dir} is not a folder")
    try:
        lines = open_audit_lines(a.data_dir, a.store)
        try:
            r = verify_chain(lines.lines(), expect=a.expect)
        finally:
            getattr(lines, "close", lambda: None)()
    except (AuditError, FacegateError) as e:
        raise CliError(e.code, e.message) from None
    except StoreError as e:
        raise CliError("FAILED_PRECONDITION", str(e)) from None
    _emit(r.to_json(), a.json)
    return 0 if r.intact else 1


def cmd_audit_pseudonym(a) -> int:
    """The pseudonym a subject has in the audit (for a subject-access request): grep for it."""
    from .audit import AuditError, KEY_FILE, load_or_create_key, pseudonym

    key_file = Path(a.data_dir) / KEY_FILE
    if not key_file.is_file():
        raise CliError("FAILED_PRECONDITION", f"no audit key at {key_file}: nothing was audited in {a.data_dir} "
                                              f"yet, or the key was not restored with the data folder")
    try:
        key = load_or_create_key(key_file)
    except AuditError as e:
        raise CliError(e.code, e.message) from None
    _emit({"subject": a.subject, "pseudonym": pseudonym(key, a.subject)}, a.json)
    return 0


def cmd_backup(a) -> int:
    from .backup import BackupError, backup

    try:
        _emit(backup(a.data_dir, a.dest), a.json)
    except BackupError as e:
        raise CliError("FAILED_PRECONDITION", str(e)) from None
    return 0


def cmd_restore(a) -> int:
    from .backup import BackupError, restore

    try:
        _emit(restore(a.src, a.data_dir, force=a.force), a.json)
    except BackupError as e:
        raise CliError("FAILED_PRECONDITION", str(e)) from None
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
    from .caller import ROLES

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
    c.add_argument("--store", help="write it to the servers' PostgreSQL store (postgresql://...)")
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
    ce.add_argument("--data-dir",
                    help="the server's data folder: its enrolled templates, and the thresholds store written")
    ce.add_argument("--store", help="or the servers' PostgreSQL store (postgresql://...)")
    common(ce)
    ce.set_defaults(func=cmd_calibrate_enrolled)

    sv = sub.add_parser("serve", help="start the gRPC service")
    sv.add_argument("--config", help="a TOML settings file (see service/settings.py)")
    sv.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:50051)")
    sv.add_argument("--data-dir", help="the data folder: templates, thresholds, audit log (default ./data)")
    sv.add_argument("--checkpoint", help="encoder checkpoint (default: the shipped one)")
    sv.add_argument("--tls-dir", help="mutual TLS: DIR's ca.crt, server.crt, server.key (facegate certs init); "
                                      "every client then needs a certificate signed by DIR's CA, and its role "
                                      "decides what it may call")
    sv.add_argument("--insecure", action="store_true", default=None,
                    help="without --tls-dir, listen beyond loopback anyway: every client that reaches the port "
                         "is an admin")
    sv.add_argument("--metrics-listen", metavar="HOST:PORT",
                    help="serve Prometheus metrics at http://HOST:PORT/metrics (default: no metrics endpoint)")
    sv.add_argument("--store", help="postgresql://USER@HOST:PORT/DB: templates, thresholds, site policies and the "
                                    "audit in PostgreSQL, shared by several serve replicas (default: the data "
                                    "folder's files)")
    sv.add_argument("--device", choices=["cpu", "cuda", "auto"],
                    help="where the face models and gates run (default cpu; auto: cuda when there is a GPU)")
    sv.add_argument("--health-listen", metavar="HOST:PORT",
                    help="also answer grpc.health.v1 (only) in plaintext here, for probes without a certificate")
    sv.add_argument("--index-kind", choices=["auto", "flat", "hnsw"],
                    help="the template index: exact flat, HNSW, or auto (flat for a campus, HNSW beyond; default)")
    sv.add_argument("--workers", type=int, help="requests running the face models at once (default 2)")
    sv.add_argument("--max-queue", type=int, help="camera requests allowed to wait for a worker; one more is "
                                                  "answered RESOURCE_EXHAUSTED at once (default 16)")
    sv.add_argument("--large-photo-pixels", type=int,
                    help="Verify/Identify photos of more pixels run on a worker of their own at a lower CPU "
                         "priority (default 8294400, a 4K frame's; 0: on the same workers)")
    sv.add_argument("--batch-window-ms", type=float, help="micro-batching: how long a batch waits for more "
                                                          "requests (default 3)")
    sv.add_argument("--batch-max", type=int, help="micro-batching: requests per batch (default 1: off)")
    sv.set_defaults(func=cmd_serve)

    def client(p):
        p.add_argument("--server", required=True, help="HOST:PORT of a running facegate serve")
        p.add_argument("--timeout", type=float, default=60.0, help="seconds per call")
        p.add_argument("--tls-dir", help="mutual TLS: the folder of the CA's ca.crt and this client's certificate")
        p.add_argument("--client", help="with --tls-dir: this client's name (NAME.crt, NAME.key)")
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
    si = sub.add_parser("site", help="a site's policy: the trigger word; a photo of several faces (no site: "
                                     "list the sites with a policy or thresholds of their own)")
    si.add_argument("site", nargs="?", help="(omit: list the sites with their own; others follow the default "
                                            "site's)")
    si.add_argument("--data-dir", default="data", help="the server's data folder (default ./data)")
    si.add_argument("--store", help="the servers' PostgreSQL store (postgresql://...) instead of a data folder")
    si.add_argument("--trigger-word", choices=["on", "off"], help="require the word \"activate\" (omit: show)")
    si.add_argument("--several-faces", choices=["refuse", "central-face"],
                    help="Verify on a photo of several faces of similar size: refuse it (MULTIPLE_FACES, the "
                         "default) or compare the central one with the card's owner (omit: show)")
    si.add_argument("--min-face-px", type=int, metavar="PX",
                    help="the smallest face the door cares about (default 40; a kiosk whose users stand close: "
                         "80): smaller faces are FACE_TOO_SMALL, and larger values make detection cheaper")
    si.add_argument("--json", action="store_true")
    si.set_defaults(func=cmd_site)

    cg = sub.add_parser("certs", help="a private CA for mutual TLS: the server's and the clients' certificates")
    cs = cg.add_subparsers(dest="certs_command", required=True)
    ci = cs.add_parser("init", help="a new CA (ca.crt, ca.key) and the server's certificate (server.crt, server.key)")
    ci.add_argument("dir")
    ci.add_argument("--host", action="append", help="a name or IP address clients reach the server by "
                                                    "(repeatable; localhost and 127.0.0.1 always)")
    ci.add_argument("--days", type=int, default=825, help="the server certificate's validity (the CA's: 10 years)")
    ci.add_argument("--json", action="store_true")
    ci.set_defaults(func=cmd_certs)
    cu = cs.add_parser("issue", help="a client certificate NAME.crt/NAME.key with its role, signed by DIR's CA")
    cu.add_argument("dir")
    cu.add_argument("name")
    cu.add_argument("--role", required=True, choices=ROLES)
    cu.add_argument("--site", help="a door's site (required for a door): it answers for that site only")
    cu.add_argument("--days", type=int, default=825, help="validity in days")
    cu.add_argument("--force", action="store_true", help="replace an existing NAME.crt/NAME.key (renewal)")
    cu.add_argument("--json", action="store_true")
    cu.set_defaults(func=cmd_certs)
    lt = sub.add_parser("loadtest", help="load a running server: N cameras (closed loop) or R requests/s (open "
                                         "loop) of Verify, Identify or a mix; latency, throughput, errors")
    lt.add_argument("--rpc", choices=["verify", "identify", "mix"], default="verify",
                    help="mix: Verify and Identify in turn")
    lt.add_argument("--cameras", type=int, default=1, help="closed loop: cameras, each sending its next request "
                                                          "when the answer arrives (default 1)")
    lt.add_argument("--seconds", type=float, default=10.0, help="measured seconds, after the warm-up (default 10)")
    lt.add_argument("--rate", type=float, help="open loop: requests per second in all, each timed from its "
                                               "scheduled send time")
    lt.add_argument("--photos", metavar="DIR", help="photos to send, DIR/<subject>/<photo> (default: a few LFW "
                                                     "photos under $FACEGATE_DATA or ../shared/data)")
    lt.add_argument("--max-photos", type=int, default=100, help="at most this many of --photos, drawn at random")
    lt.add_argument("--frames", metavar="WxH", help="paste each photo into a camera frame of this size (face "
                                                     "150-200 px), encoded as JPEG once before the run")
    lt.add_argument("--subject", help="the id claimed in Verify (default: each photo's folder name); it must be "
                                      "enrolled (`facegate enroll`), else the answers are NOT_FOUND errors")
    lt.add_argument("--site", help="the site named in each request")
    lt.add_argument("--deadline-ms", type=float, help="the gRPC deadline of each request (default: none)")
    lt.add_argument("--warmup", type=float, default=1.0, help="seconds sent first and not counted (default 1)")
    lt.add_argument("--plot", metavar="P.png", help="write latency over time and its histogram to this PNG")
    lt.add_argument("--tls-dir", help="mutual TLS: the folder of ca.crt and the --client certificate")
    lt.add_argument("--client", help="mutual TLS: the client certificate's name (NAME.crt, NAME.key)")
    lt.add_argument("--server", required=True, help="HOST:PORT of a running facegate serve")
    lt.add_argument("--json", action="store_true", help="JSON only on stdout")
    lt.set_defaults(func=cmd_loadtest)

    st = sub.add_parser("status", help="subjects, templates, encoder and index versions")
    client(st)
    st.set_defaults(func=cmd_status)
    he = sub.add_parser("health", help="the server's grpc.health.v1 status: exit 0 SERVING, 1 not serving, 2 error")
    he.add_argument("--service", default="", help="a service name (default \"\": the server as a whole)")
    client(he)
    he.set_defaults(func=cmd_health, timeout=5.0)
    for flag, help_ in (("--tls-dir", "the CA folder (ca.crt, NAME.crt, NAME.key) for mutual TLS"),
                        ("--client", "the name of the client certificate in --tls-dir")):
        if flag not in he._option_string_actions:      # every client command's, where they have them
            he.add_argument(flag, help=help_)

    ri = sub.add_parser("reindex", help="upgrade: re-enroll a photo source with an encoder into a new index "
                                         "version, then switch to it atomically")
    ri.add_argument("photo_dir", help="the photo source: DIR/<subject_id>/<photos>")
    ri.add_argument("--data-dir", help="the data folder")
    ri.add_argument("--store", help="or the servers' PostgreSQL store (postgresql://...): a new index version in it; "
                                    "replicas serve it once restarted with the new encoder")
    ri.add_argument("--name", help="the new index version's name (default: the encoder version)")
    ri.add_argument("--no-switch", action="store_true", help="build it, but leave CURRENT as it is")
    common(ri)
    ri.set_defaults(func=cmd_reindex)
    sw = sub.add_parser("switch-index", help="point the data folder at another index version (atomic)")
    sw.add_argument("name")
    sw.add_argument("--data-dir", required=True)
    sw.add_argument("--json", action="store_true")
    sw.set_defaults(func=cmd_switch_index)

    au = sub.add_parser("audit", help="the hash-chained audit: check the chain, find a subject's lines")
    aus = au.add_subparsers(dest="audit_command", required=True)
    av = aus.add_parser("verify", help="is the audit's chain intact? exit 0 intact, 1 a line edited, removed "
                                       "or reordered (named), 2 an error")
    av.add_argument("--data-dir", help="the data folder whose audit.jsonl to check")
    av.add_argument("--store", help="a store URL (postgresql://...) whose audit to check")
    av.add_argument("--expect", metavar="HASH", help="a last_hash printed earlier and kept elsewhere: the chain "
                                                     "must still hold that line (catches removal of the newest)")
    av.add_argument("--json", action="store_true")
    av.set_defaults(func=cmd_audit_verify)
    ap_ = aus.add_parser("pseudonym", help="a subject's pseudonym in the audit (subject-access requests)")
    ap_.add_argument("subject")
    ap_.add_argument("--data-dir", required=True, help="the data folder holding audit.key")
    ap_.add_argument("--json", action="store_true")
    ap_.set_defaults(func=cmd_audit_pseudonym)

    bk = sub.add_parser("backup", help="a consistent copy of a data folder, safe while a server serves it")
    bk.add_argument("dest", help="a new folder for the backup (must not exist, or be empty)")
    bk.add_argument("--data-dir", required=True)
    bk.add_argument("--json", action="store_true")
    bk.set_defaults(func=cmd_backup)
    rs = sub.add_parser("restore", help="check a backup's manifest and restore it into a data folder")
    rs.add_argument("src", help="a folder made by `facegate backup`")
    rs.add_argument("--data-dir", required=True, help="the data folder to restore into (new or empty)")
    rs.add_argument("--force", action="store_true", help="replace a data folder that is not empty (it is "
                                                         "moved aside, not deleted)")
    rs.add_argument("--json", action="store_true")
    rs.set_defaults(func=cmd_restore)

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
