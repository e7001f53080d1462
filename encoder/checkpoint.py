"""Encoder checkpoints: one file that loads with no other (nanoGPT's checkpoint dict).

A shipped checkpoint holds: the encoder config, the weights (float16 to keep it small; they
are loaded back into float32), the preprocessing, a version string, the training data and
config, the default threshold (calibrated for a target FAR) and evaluation results.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import torch

from .align import AlignConfig
from .face_encoder import MEAN, STD, EncoderConfig, FaceEncoder

FORMAT = "facegate-encoder/1"
DEFAULT_CHECKPOINT = Path(__file__).parent / "weights" / "default.pt"


class CheckpointError(ValueError):
    pass


def atomic_torch_save(obj, path: str | Path) -> None:
    """torch.save to `name.tmp`, fsync, rename: a reader sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


ALIGNMENT = {
    "arcface112": "5-point similarity transform to the ArcFace template, {n}x{n}",
    "dlib150": "dlib's 5-point shape model on MTCNN's face, dlib's chip (padding 0.25), {n}x{n}",
}


def align_config_for(config: EncoderConfig) -> AlignConfig:
    """The geometry an encoder reads: dlib's chip for a chip_resnet that takes the chip itself
    (`chip_from_crop112: null`), the ArcFace crop for every other."""
    reads_chip = config.backbone == "chip_resnet" and config.backbone_args.get("chip_from_crop112", 0) is None
    return AlignConfig.for_geometry("dlib150" if reads_chip else "arcface112")


def preprocessing_info(config: EncoderConfig, align: AlignConfig | None = None) -> dict:
    align = align or align_config_for(config)
    return {
        "detector": "facenet-pytorch MTCNN",
        "geometry": align.geometry,
        "alignment": ALIGNMENT[align.geometry].format(n=align.crop_size),
        "crop_size": align.crop_size,
        "input_size": config.input_size,
        "resize": "bilinear, antialiased",
        "normalise": {"mean": MEAN, "std": STD},
        "channels": "RGB",
    }


def weights_digest(state_dict: dict, preprocessing: dict | None = None) -> str:
    """Digest of the weights and the preprocessing: anything that changes an embedding."""
    h = hashlib.sha256(json.dumps(preprocessing or {}, sort_keys=True).encode())
    for k in sorted(state_dict):
        h.update(k.encode())
        h.update(state_dict[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def save_checkpoint(path: str | Path, model: FaceEncoder, *, name: str, threshold: float | None = None,
                    threshold_info: dict | None = None, training: dict | None = None,
                    metrics: dict | None = None, half: bool = True, flip_average: bool = False,
                    precision: str = "float32") -> dict:
    """Write atomically; the version is '<name>-<digest of the weights>', so two different
    encoders never share a version tag. `precision`: the arithmetic the encoder runs in
    (PRECISIONS); bfloat16 is an autocast of the float weights, part of the version because
    it changes the embeddings in their third decimal."""
    sd = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone()
          for k, v in model.state_dict().items()}
    prep = _with_precision({**preprocessing_info(model.config), "flip_average": flip_average}, precision)
    ckpt = {
        "format": FORMAT,
        "name": name,
        "version": f"{name}-{weights_digest(sd, prep)}",
        "config": model.config.to_dict(),
        "state_dict": sd,
        "preprocessing": prep,
        "threshold": threshold,
        "threshold_info": threshold_info or {},
        "training": training or {},
        "metrics": metrics or {},
    }
    return _write(ckpt, path)


def load_checkpoint(path: str | Path | None = None, device: str | torch.device = "cpu") -> tuple[FaceEncoder, dict]:
    """-> (model in eval mode, the checkpoint dict without its weights). Only tensors and plain
    types are unpickled (weights_only=True): a checkpoint file is never trusted with code."""
    path = Path(path) if path else DEFAULT_CHECKPOINT
    ckpt = _read(path)
    cfg = ckpt["config"]
    model = FaceEncoder(EncoderConfig(**{**cfg, "backbone_args": _tuples(cfg.get("backbone_args", {}))}))
    sd = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path}: weights do not fit its config: {e}") from None
    model.to(device).eval()
    return model, _meta(ckpt)


def read_meta(path: str | Path | None = None) -> dict:
    """The checkpoint dict without its weights, for its version, thresholds and calibrated
    values, without building the model."""
    return _meta(_read(Path(path) if path else DEFAULT_CHECKPOINT))


def _meta(ckpt: dict) -> dict:
    """Everything but the weights; a score-normalisation cohort as its float16 bytes (plain,
    comparable; encoder.score_norm.ScoreNorm.from_meta reads it)."""
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    if isinstance(meta.get("score_norm_cohort"), torch.Tensor):
        meta["score_norm_cohort"] = meta["score_norm_cohort"].to(torch.float16).contiguous().numpy().tobytes()
    return meta


TENSOR_KEYS = ("state_dict", "score_norm_cohort")     # kept as tensors, everything else plain Python


def _write(ckpt: dict, path: str | Path) -> dict:
    """Everything but the weights (and the score normalisation's cohort) as plain Python (see
    `plain`), then an atomic save."""
    ckpt = {k: v if k in TENSOR_KEYS else plain(v) for k, v in ckpt.items()}
    atomic_torch_save(ckpt, path)
    return ckpt


def _read(path: Path) -> dict:
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, pickle.UnpicklingError) as e:
        # truncated, not a torch file, or content that weights_only refuses to unpickle
        raise CheckpointError(f"checkpoint {path} cannot be read: {type(e).__name__}: {e}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a {FORMAT} file")
    return ckpt


PRECISIONS = ("float32", "bfloat16")


def _with_precision(prep: dict, precision: str) -> dict:
    """float32 is the default and is left unwritten, so that versions of float32 encoders stay
    what they were before precision was a setting."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; known: {PRECISIONS}")
    prep = {k: v for k, v in prep.items() if k != "precision"}
    return prep if precision == "float32" else {**prep, "precision": precision}


def _tuples(d: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def plain(value):
    """A value as plain Python (dict, list, float, int, str, bool, None): checkpoints are read
    with torch.load(weights_only=True), which refuses NumPy scalars and arrays."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist"):          # numpy scalars and arrays, torch tensors
        return plain(value.tolist())
    return value


CALIBRATED_KEYS = ("night_threshold", "night_identify_threshold", "too_dark_light", "night_info", "cluster")


def release_copy(source: str | Path | None, dest: str | Path) -> Path:
    """A release file: `dest`, made a copy of the checkpoint `source` (the packaged one if None)
    when it does not exist yet. Calibrated values and results are recorded in a release file
    (record_in_checkpoint), never in the packaged checkpoint in place: shipping a release is
    its own, explicit step (`cp RELEASE encoder/weights/default.pt`). An existing `dest` must
    hold the same encoder version as `source`, when `source` is given."""
    dest = Path(dest)
    if dest.resolve() == DEFAULT_CHECKPOINT.resolve():
        raise CheckpointError(f"{dest} is the packaged checkpoint: write a release file elsewhere, then ship it")
    if dest.exists():
        if source is not None and read_meta(source)["version"] != read_meta(dest)["version"]:
            raise CheckpointError(f"release file {dest} holds encoder {read_meta(dest)['version']}, not "
                                  f"{read_meta(source)['version']} ({source}): name a new release file")
        return dest
    _write(_read(Path(source) if source else DEFAULT_CHECKPOINT), dest)
    return dest


def record_in_checkpoint(path: str | Path, *, threshold: float | None = None,
                         threshold_info: dict | None = None, metrics: dict | None = None,
                         flip_average: bool | None = None, precision: str | None = None,
                         identify_threshold: float | None = None,
                         identify_threshold_info: dict | None = None, score_norm=None, **calibrated) -> str:
    """Store a calibrated default threshold and/or evaluation results in a checkpoint file;
    `calibrated`: more values calibrated for this encoder (CALIBRATED_KEYS: the night profile's
    thresholds, TOO_DARK's light level, the clustering cut). Changing the preprocessing
    (flip_average) or the arithmetic (precision) changes the embeddings, and so the version,
    and drops the thresholds and metrics that no longer hold; so does `score_norm` (an
    encoder.score_norm.ScoreNorm, or False to remove one), which changes every distance. Returns the version. The packaged
    checkpoint is never rewritten in place (release_copy makes the file to record in)."""
    unknown = set(calibrated) - set(CALIBRATED_KEYS)
    if unknown:
        raise ValueError(f"not a calibrated value of a checkpoint: {sorted(unknown)}; known: {CALIBRATED_KEYS}")
    path = Path(path)
    if path.resolve() == DEFAULT_CHECKPOINT.resolve():
        raise CheckpointError(f"{path} is the packaged checkpoint: record in a release file (release_copy)")
    ckpt = _read(path)
    prep = dict(ckpt["preprocessing"])
    if flip_average is not None and bool(flip_average) != prep.get("flip_average", False):
        prep["flip_average"] = bool(flip_average)
    if precision is not None:
        prep = _with_precision(prep, precision)
    if score_norm is False:
        prep.pop("score_norm", None)
        ckpt.pop("score_norm_cohort", None)
    elif score_norm is not None:
        prep["score_norm"] = score_norm.info()
        ckpt["score_norm_cohort"] = torch.from_numpy(score_norm.cohort.astype("float16")).contiguous()
    if prep != ckpt["preprocessing"]:
        ckpt["preprocessing"] = prep
        ckpt["version"] = f"{ckpt.get('name', 'facegate')}-{weights_digest(ckpt['state_dict'], ckpt['preprocessing'])}"
        ckpt["threshold"], ckpt["threshold_info"], ckpt["metrics"] = None, {}, {}
        ckpt["identify_threshold"], ckpt["identify_threshold_info"] = None, {}
        for k in CALIBRATED_KEYS:
            ckpt.pop(k, None)
    ckpt.update(calibrated)
    if threshold is not None:
        ckpt["threshold"] = float(threshold)
        ckpt["threshold_info"] = threshold_info or {}
    if identify_threshold is not None:
        ckpt["identify_threshold"] = float(identify_threshold)
        ckpt["identify_threshold_info"] = identify_threshold_info or {}
    if metrics:
        ckpt["metrics"] = {**ckpt.get("metrics", {}), **metrics}
    return _write(ckpt, path)["version"]
