"""Photo -> aligned face -> 128-d embedding: the aligner and the encoder together."""
from __future__ import annotations

import logging
import os
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .align import AlignConfig, FaceAligner, FaceAlignment
from .checkpoint import load_checkpoint
from .face_encoder import FaceEncoder, preprocess
from .precision import runtime_bf16
from .score_norm import ScoreNorm

log = logging.getLogger(__name__)


@dataclass
class Embedding:
    alignment: FaceAlignment
    vector: np.ndarray | None      # 128 float32, unit length; None when no usable face


def declared_precision(meta: dict) -> str:
    """The arithmetic a checkpoint was calibrated in ("float32" or "bfloat16")."""
    return meta.get("preprocessing", {}).get("precision", "float32")


def frozen_on(device: torch.device, channels_last: bool) -> bool:
    """Whether the network runs traced and frozen (Embedder.__init__): on the CPU, in NHWC, unless
    FACEGATE_FROZEN=0."""
    return device.type == "cpu" and channels_last and os.environ.get("FACEGATE_FROZEN", "1") != "0"


def align_config(meta: dict) -> AlignConfig:
    """The face geometry a checkpoint was trained on (its crop size and framing)."""
    prep = meta.get("preprocessing", {})
    return AlignConfig(crop_size=prep.get("crop_size", 112), geometry=prep.get("geometry", "arcface112"))


def arithmetic_name(bf16: bool, frozen: bool) -> str:
    return ("bfloat16" if bf16 else "float32") + ("-frozen" if frozen else "-eager")


class EncoderCard:
    """An encoder's identity and calibrated values without its networks: what a server whose face
    models run in worker processes of their own (service/processes.py) needs of it: its version,
    thresholds and calibrated values (`meta`), the arithmetic its workers compute in, the
    embedding's size, the side a photo is searched at. It has no align or embed_crops: the
    models' work is the worker processes'. The server's process then does not hold a copy of
    the networks, the detector and the landmark model that it never runs (about 0.3 GB)."""

    def __init__(self, meta: dict, device="cpu", precision: str | None = None):
        self.meta = meta
        self.version: str = meta.get("version", "unversioned")
        self.norm: ScoreNorm | None = ScoreNorm.from_meta(meta)     # None: plain Euclidean distances
        self.device = torch.device(device)
        self.declared = declared_precision(meta)
        self.bf16 = runtime_bf16(self.declared, self.device, precision)
        self.frozen = frozen_on(self.device, self.declared == "bfloat16")
        self.embedding_dim = int(meta.get("config", {}).get("embedding_dim", 128))
        self.sized_max_side = align_config(meta).sized_max_side

    @classmethod
    def from_checkpoint(cls, path=None, device="cpu", precision: str | None = None) -> "EncoderCard":
        """The checkpoint is read whole, its weights fitted to its network and then let go: a
        broken checkpoint stops the server's start here, with its name, as a loaded one would."""
        _, meta = load_checkpoint(path)
        return cls(meta, device=device, precision=precision)

    @property
    def arithmetic(self) -> str:
        return arithmetic_name(self.bf16, self.frozen)

    @property
    def default_threshold(self) -> float | None:
        return self.meta.get("threshold")


class Embedder:
    def __init__(self, model: FaceEncoder, meta: dict, aligner: FaceAligner | None = None, device="cpu",
                 precision: str | None = None):
        self.model = model.eval()
        self.meta = meta
        self.version: str = meta.get("version", "unversioned")
        self.norm: ScoreNorm | None = ScoreNorm.from_meta(meta)     # None: plain Euclidean distances
        self.device = torch.device(device)
        self.aligner = aligner or FaceAligner(align_config(meta), device=device)
        # the photo and its mirror image, embedded together and averaged (a checkpoint's choice)
        self.flip = bool(meta.get("preprocessing", {}).get("flip_average", False))
        # bfloat16 autocast where the checkpoint was calibrated so (it was trained under the same
        # autocast) and this hardware computes bfloat16 natively; float32 otherwise, where emulated
        # bfloat16 would be several times slower (encoder/precision.py)
        self.declared = declared_precision(meta)
        self.bf16 = runtime_bf16(self.declared, self.device, precision)   # precision None: FACEGATE_PRECISION
        if self.declared == "bfloat16" and not self.bf16:
            log.info("embedder: %s was calibrated in bfloat16, which this %s does not compute natively: "
                     "running it in float32", self.version, self.device.type.upper())
        # and there in NHWC (channels_last), where oneDNN's convolutions are fastest: a
        # chip_resnet, 1 thread, batch 1, 11.3 ms NCHW -> 7.6 ms in bfloat16 (native), 25 -> 22 ms for
        # both views in float32 (AVX2). Layout only, the same arithmetic; float32 checkpoints keep
        # NCHW, bit for bit as before
        self.channels_last = self.declared == "bfloat16"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # On the CPU, the network is traced and frozen once per batch size (TorchScript): the
        # autocast casts and oneDNN's weight reorders are then done once, not at every call
        # (a chip_resnet in bfloat16, 1 thread, batch 1: ~13 ms eager -> ~7 ms frozen; the
        # embeddings agree to cos > 0.9999). FACEGATE_FROZEN=0 turns it off; a model that
        # cannot be traced runs eagerly.
        self.frozen = frozen_on(self.device, self.channels_last)
        self._frozen: OrderedDict[int, torch.jit.ScriptModule] = OrderedDict()
        self._frozen_lock = threading.Lock()

    @property
    def arithmetic(self) -> str:
        """How the network is computed: embeddings of one version computed two ways differ by
        rounding, so caches of embeddings are keyed by this as well as by the version."""
        return arithmetic_name(self.bf16, self.frozen)

    @classmethod
    def from_checkpoint(cls, path=None, device="cpu", precision: str | None = None) -> "Embedder":
        model, meta = load_checkpoint(path, device)
        return cls(model, meta, device=device, precision=precision)

    @property
    def default_threshold(self) -> float | None:
        return self.meta.get("threshold")

    @property
    def embedding_dim(self) -> int:
        return self.model.config.embedding_dim

    @torch.inference_mode()
    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """Aligned uint8 crops (B x S x S x 3) -> B x 128 float32."""
        x = preprocess(crops, self.model.config.input_size).to(self.device)
        if self.flip:
            x = torch.cat([x, x.flip(3)])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        net = self._frozen_for(x) if self.frozen else None
        if net is not None:
            e = net(x)
        else:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                e = self.model(x)
        e = e.float()
        if self.bf16:                     # unit length in float32, as a float32 encoder gives it
            e = F.normalize(e, dim=1)
        if self.flip:
            e = F.normalize(e[:len(e) // 2] + e[len(e) // 2:], dim=1)
        return e.cpu().numpy()

    FROZEN_BATCH_SIZES = 4      # graphs kept (least recently used dropped): 1 and 2 serve requests

    def _frozen_for(self, x: torch.Tensor):
        """The frozen graph for x's batch size (traced on first use), or None: eager then."""
        n = len(x)
        with self._frozen_lock:
            if n in self._frozen:
                self._frozen.move_to_end(n)
                return self._frozen[n]
            try:
                # traced outside inference mode (a frozen graph cannot hold inference tensors),
                # under the same autocast the eager model runs in
                with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings(), \
                        torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=False):
                    warnings.simplefilter("ignore")
                    net = torch.jit.freeze(torch.jit.trace(self.model, x.clone(), check_trace=False))
            except Exception as exc:                        # noqa: BLE001 - eager is always right
                log.warning("embedder: tracing failed (%s); running the network eagerly", exc)
                self.frozen = False
                return None
            self._frozen[n] = net
            if len(self._frozen) > self.FROZEN_BATCH_SIZES:
                self._frozen.popitem(last=False)
            return net

    def align(self, img: np.ndarray, min_face_px: int | None = None, id_photo: bool = False) -> FaceAlignment:
        return self.aligner.align(img, min_face_px, id_photo)

    @property
    def sized_max_side(self) -> int:
        """The longest side a photo is searched at when sized to a site (AlignConfig.sized_max_side)."""
        return self.aligner.config.sized_max_side

    def embed(self, img: np.ndarray, accept_any_face: bool = False) -> Embedding:
        """The service's rule: only a usable face is embedded (reason OK). With `accept_any_face`,
        a face flagged MULTIPLE_FACES or FACE_TOO_SMALL is embedded too (evaluation, enrollment review)."""
        a = self.aligner.align(img)
        if a.crop is None or (not a.ok and not accept_any_face):
            return Embedding(a, None)
        return Embedding(a, self.embed_crops(a.crop[None])[0])

    def crop_for_evaluation(self, img: np.ndarray) -> tuple[np.ndarray, bool]:
        """CONTRACT.md's evaluation rule: the chosen face, or a centre crop when none is found.
        Returns (crop, face_found)."""
        a = self.aligner.align(img)
        crop = a.crop if a.crop is not None else self.aligner.fallback_crop(img)
        return crop, a.crop is not None

    def embed_for_evaluation(self, img: np.ndarray) -> tuple[np.ndarray, bool]:
        """The evaluation rule's crop, embedded. Returns (vector, face_found)."""
        crop, found = self.crop_for_evaluation(img)
        return self.embed_crops(crop[None])[0], found
