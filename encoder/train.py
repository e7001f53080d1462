"""Triplet-loss training of the face encoder, with optional distillation from a teacher.

The loss is FaceNet's triplet loss on P identities x K photos, online-mined (semi-hard or
batch-hard). With teacher embeddings in the crop cache, each batch also carries `extra`
photos drawn from everything (unlabelled faces included) and the student is pulled towards
the teacher: cosine to the teacher's embedding of the same photo, and the batch's pairwise
similarities towards the teacher's (relational distillation). With about ten thousand
labelled photos, the teacher's geometry over many faces is what makes the encoder generalise.
With `teacher_in_loop`, the teacher (dlib's ResNet in PyTorch) embeds each augmented view the
student sees, instead of the cache's one embedding per photo (consistent distillation).

Resumable: `last.pt` in the run folder holds the weights, optimiser, step and configs, and is
written atomically every `ckpt_every` steps; every random draw is a function of (seed, step).
"""
from __future__ import annotations

import json
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .augment import AugmentConfig, augment, augment_pixels, degrade_pixels
from .block_refit import fit_linear
from .checkpoint import align_config_for, atomic_torch_save
from .crop_cache import CropCache
from .distributed import DistInfo, all_gather_with_grad, convert_batchnorm, init_distributed, shard
from .face_encoder import EncoderConfig, FaceEncoder, pixels_to_input, preprocess
from .face_folders import UNLABELLED
from .miners import create_miner
from .pair_metrics import auc, best_accuracy_threshold, roc, tar_at_far
from .pk_sampler import PKSampler
from .precision import cpu_has_bf16
from .schedule import cosine
from .triplet_margin_loss import TripletMarginLoss


@dataclass(frozen=True)
class TrainConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    p: int = 32                   # identities per batch
    k: int = 4                    # photos per identity
    extra: int = 96               # photos drawn from everything (distillation only needs no label)
    steps: int = 6000
    lr: float = 2e-3
    min_lr: float = 2e-5
    warmup: int = 200
    weight_decay: float = 5e-4
    margin: float = 0.2
    miner: str = "semihard"
    w_triplet: float = 1.0
    w_distill: float = 1.0        # 1 - cos(student, teacher) per photo
    w_relation: float = 4.0       # MSE between the batch's student and teacher similarity matrices
    center_teacher: bool = True   # subtract the teacher's mean embedding, then re-normalise (see TrainData)
    val_share: float = 0.05       # share of labelled identities held out of training, for validation
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 250
    eval_every: int = 500
    device: str = "cpu"
    amp: bool = True              # float16 mixed precision on CUDA
    cpu_bf16: bool = False        # bfloat16 autocast on the CPU, where it has AVX512-BF16 or AMX (bench/train_speed.py)
    channels_last: bool = False   # NHWC tensors: faster convolutions on CPUs (oneDNN) and tensor cores
    threads: int = 0              # torch threads on the CPU; 0 = torch's default
    init_from: str | None = None  # an encoder checkpoint to start from (fine-tuning); same config, or deeper, or another input size;
    # "dlib": the teacher's own weights (a chip_resnet backbone with a pool head; dlib_resnet.chip_encoder_from_dlib)
    teacher_in_loop: bool = False  # the teacher embeds each augmented view the student sees (dlib_resnet.py),
    # instead of the cache's embedding of the photo as it was: consistent distillation
    mixup: float = 0.0            # with teacher_in_loop: share of the `extra` photos replaced by a blend of two
    # (lambda ~ U(0, 1)) that the teacher embeds too; distillation only, no triplet (function matching)
    w_blockwise: float = 0.0      # with teacher_in_loop and a chip_resnet student: each block regressed on the
    # teacher's own block, fed the teacher's input to it (blockwise_loss); with w_triplet = w_distill =
    # w_relation = 0 the student's end-to-end pass is skipped
    bias_lr_mult: float = 1.0     # biases' learning rate as a multiple of lr (and no weight decay on them):
    # Adam moves a parameter by about lr per step, and dlib's folded biases are ~1 where a fresh
    # convolution's are ~0.03, so a student taught dlib's blocks needs its biases to move faster
    blockwise_inputs: str = "teacher"  # "student": each block fed the student's own map instead (one
    # end-to-end pass with a hint at every block, FitNets-style), whose embedding the other losses use
    teacher_view: str = "same"    # with teacher_in_loop: "same", the teacher embeds the student's view; "clean",
    # the view before its degradations (augment.degrade_pixels: tight photo, low resolution, low
    # light, noise), so that the student learns to give a degraded photo its clean embedding
    refit_head: int = 0           # with teacher_in_loop and a pool head: before a run's first step (not on
    # resume), set the head by least squares on this many training photos and their mirror images
    # (fit_pool_head); evaluated before and after

    def __post_init__(self):
        if self.mixup and not self.teacher_in_loop:
            raise ValueError("mixup needs teacher_in_loop: a blend of two photos has no cached teacher embedding")
        if self.w_blockwise and not (self.teacher_in_loop and self.encoder.backbone == "chip_resnet"
                                     and self.encoder.head == "pool"):
            raise ValueError("w_blockwise needs teacher_in_loop and a chip_resnet backbone with a pool head: "
                             "the teacher's own topology, block for block")
        if self.refit_head and not (self.teacher_in_loop and self.encoder.head == "pool"):
            raise ValueError("refit_head needs teacher_in_loop and a pool head: a linear map of the pooled features")
        if self.teacher_view not in ("same", "clean"):
            raise ValueError(f"teacher_view is 'same' or 'clean', not {self.teacher_view!r}")
        if self.teacher_view == "clean" and not self.teacher_in_loop:
            raise ValueError("teacher_view 'clean' needs teacher_in_loop: the cache holds one embedding per photo")
        if self.teacher_view == "clean" and (self.mixup or self.w_blockwise):
            raise ValueError("teacher_view 'clean' is for end-to-end distillation: no mixup, no w_blockwise")
        if self.blockwise_inputs not in ("teacher", "student"):
            raise ValueError(f"blockwise_inputs is 'teacher' or 'student', not {self.blockwise_inputs!r}")

    @property
    def end_to_end(self) -> bool:
        return bool(self.w_triplet or self.w_distill or self.w_relation)

    @staticmethod
    def from_dict(d: dict) -> "TrainConfig":
        d = dict(d)
        enc = d.pop("encoder", {})
        enc = EncoderConfig(**{**enc, "backbone_args": {k: tuple(v) if isinstance(v, list) else v
                                                         for k, v in enc.get("backbone_args", {}).items()}})
        aug = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.pop("augment", {}).items()})
        return TrainConfig(encoder=enc, augment=aug, **d)

    @staticmethod
    def resolve(config_file: str | Path | None, encoder: dict | None = None, **overrides) -> "TrainConfig":
        """A config file (JSON, optional) with overrides on top: `encoder` merges into its encoder
        section, every other key replaces the file's (None = not given)."""
        base = json.loads(Path(config_file).read_text()) if config_file else {}
        enc = {**base.get("encoder", {}), **{k: v for k, v in (encoder or {}).items() if v is not None}}
        given = {k: v for k, v in overrides.items() if v is not None}
        return TrainConfig.from_dict({**base, **given, "encoder": enc})


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    return cosine((step - cfg.warmup) / max(1, cfg.steps - cfg.warmup), cfg.lr, cfg.min_lr)


def _held_out(identity: str, share: float) -> bool:
    return identity != UNLABELLED and (zlib.crc32(identity.encode()) % 10_000) < share * 10_000


@dataclass
class TrainData:
    crops: torch.Tensor              # N x S x S x 3 uint8
    labels: torch.Tensor             # N, -1 = unlabelled
    teacher: torch.Tensor | None     # N x 128 or None
    train_idx: np.ndarray            # rows used for training
    val_pairs: np.ndarray            # M x 3: row a, row b, same
    identities: list[str]

    @staticmethod
    def from_cache(cache: CropCache, cfg: TrainConfig) -> "TrainData":
        names = sorted({i for i in cache.identities if i != UNLABELLED})
        ids = {n: j for j, n in enumerate(names)}
        labels = np.array([ids.get(i, -1) for i in cache.identities], np.int64)
        held = np.array([_held_out(i, cfg.val_share) for i in cache.identities])
        train_idx = np.nonzero(~held)[0]
        teacher = None
        if cache.teacher is not None:
            teacher = torch.from_numpy(cache.teacher)
            if cfg.center_teacher:
                # dlib's descriptors fill a narrow cone (two random faces: cosine ~0.84), so a
                # student can match them to cosine 0.84 by learning the mean face alone. Centred on
                # the training mean and re-normalised, they spread over the sphere (mean cosine
                # ~0) with the same verification AUC, and every unit of the loss is about identity.
                teacher = F.normalize(teacher - teacher[torch.from_numpy(train_idx)].mean(0), dim=1)
        return TrainData(
            crops=torch.from_numpy(np.array(cache.crops)),  # into memory, writable
            labels=torch.from_numpy(labels),
            teacher=teacher,
            train_idx=train_idx,
            val_pairs=make_val_pairs(labels, np.nonzero(held)[0], cfg.seed),
            identities=names,
        )


def _capped_genuine_pairs(groups, per_identity: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Each group's pairs of members (a before b), at most `per_identity` of them, drawn with rng."""
    out = []
    for g in groups:
        pairs = [(int(a), int(b)) for k, a in enumerate(g) for b in g[k + 1:]]
        out += [pairs[j] for j in rng.permutation(len(pairs))[:per_identity]]
    return out


def make_val_pairs(labels: np.ndarray, rows: np.ndarray, seed: int, per_identity: int = 10,
                   impostor_factor: int = 4) -> np.ndarray:
    """Genuine pairs within each held-out identity (at most `per_identity`), and
    `impostor_factor` times as many random impostor pairs among the same rows."""
    rng = np.random.default_rng(seed)
    by = {}
    for r in rows:
        by.setdefault(int(labels[r]), []).append(int(r))
    gen = [(a, b, 1) for a, b in _capped_genuine_pairs(by.values(), per_identity, rng)]
    imp = []
    rows = np.asarray(rows)
    while len(imp) < impostor_factor * len(gen) and len(by) > 1:
        a, b = rng.choice(rows, 2, replace=False)
        if labels[a] != labels[b]:
            imp.append((int(a), int(b), 0))
    return np.array(gen + imp, np.int64).reshape(-1, 3)


def heldout_pairs(identities: list[str], share: float, per_identity: int, seed: int):
    """The strict list of the held-out identities: their rows (photos),
    and pairs over those rows as indices a, b and `same`: every genuine pair of a person, at most
    `per_identity` of them drawn with the seed, and *every* impostor pair, so that TAR at a low
    FAR rests on ~10^5 impostors rather than make_val_pairs' few random ones."""
    rows = np.array([i for i, n in enumerate(identities) if n != UNLABELLED and _held_out(n, share)], np.int64)
    names = np.array([identities[i] for i in rows])
    gen = _capped_genuine_pairs((np.nonzero(names == n)[0] for n in sorted(set(names))),
                                per_identity, np.random.default_rng(seed))
    a, b = np.triu_indices(len(rows), 1)
    imp = names[a] != names[b]
    g = np.array(gen, np.int64).reshape(-1, 2)
    same = np.concatenate([np.ones(len(g), bool), np.zeros(int(imp.sum()), bool)])
    return rows, np.concatenate([g[:, 0], a[imp]]), np.concatenate([g[:, 1], b[imp]]), same


@torch.no_grad()
def embed_crops(model: FaceEncoder, crops: torch.Tensor, batch: int = 256, device="cpu") -> torch.Tensor:
    model.eval()
    out = [model(preprocess(crops[i:i + batch], model.config.input_size).to(device)).float().cpu()
           for i in range(0, len(crops), batch)]
    return torch.cat(out) if out else torch.zeros(0, model.config.embedding_dim)


def evaluate(model: FaceEncoder, data: TrainData, device="cpu") -> dict:
    """Verification on the held-out identities' pairs (never trained on)."""
    if len(data.val_pairs) == 0:
        return {}
    rows = np.unique(data.val_pairs[:, :2])
    pos = {r: i for i, r in enumerate(rows)}
    e = embed_crops(model, data.crops[torch.from_numpy(rows)], device=device)
    a = e[[pos[r] for r in data.val_pairs[:, 0]]]
    b = e[[pos[r] for r in data.val_pairs[:, 1]]]
    dist = (a - b).norm(dim=1).numpy()
    same = data.val_pairs[:, 2].astype(bool)
    _, far, tar = roc(dist, same)
    t, acc = best_accuracy_threshold(dist, same)
    out = {"val_pairs": int(len(same)), "val_acc": round(acc, 4), "val_auc": round(auc(far, tar), 4),
           "val_tar@far=1e-2": round(tar_at_far(far, tar, 1e-2), 4), "val_threshold": round(t, 4)}
    if data.teacher is not None:
        ta, tb = data.teacher[data.val_pairs[:, 0]], data.teacher[data.val_pairs[:, 1]]
        td = (ta - tb).norm(dim=1).numpy()
        _, tfar, ttar = roc(td, same)
        out["teacher_val_auc"] = round(auc(tfar, ttar), 4)
    return out


def _batch_rows(sampler_batch: list[int], data: TrainData, cfg: TrainConfig, step: int,
                dist_info: DistInfo = DistInfo()) -> tuple[np.ndarray, np.ndarray]:
    """-> (rows of the whole batch, this rank's rows). The whole batch is the P x K identities
    plus `extra` photos from everything; rank r takes its share of each part, and the whole
    batch is the ranks' shares in rank order (the order all_gather_with_grad joins them)."""
    rng = np.random.default_rng([cfg.seed, step, 1])
    extra = rng.choice(data.train_idx, cfg.extra, replace=False) if cfg.extra else np.zeros(0, np.int64)
    pk = np.asarray(sampler_batch, np.int64)
    if not dist_info.enabled:
        rows = np.concatenate([pk, extra])
        return rows, rows
    parts = [np.concatenate([shard(pk, DistInfo(r, dist_info.world)), shard(extra, DistInfo(r, dist_info.world))])
             for r in range(dist_info.world)]
    return np.concatenate(parts), parts[dist_info.rank]


def batch_loss(e: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None, cfg: TrainConfig,
               miner, loss_fn) -> tuple[torch.Tensor, dict, int]:
    """The loss of one whole batch of embeddings: triplet (mined online), and with a teacher,
    cosine distillation and relational distillation. -> (loss, parts, number of triplets)."""
    triplets = miner(e, labels)
    parts = {"triplet": loss_fn(e, labels, triplets)}
    loss = cfg.w_triplet * parts["triplet"]
    if teacher is not None and (cfg.w_distill or cfg.w_relation):
        parts["distill"] = (1 - (e * teacher).sum(1)).mean()
        off = ~torch.eye(len(e), dtype=torch.bool, device=e.device)
        parts["relation"] = F.mse_loss((e @ e.T)[off], (teacher @ teacher.T)[off])
        loss = loss + cfg.w_distill * parts["distill"] + cfg.w_relation * parts["relation"]
    return loss, parts, int(len(triplets[0]))


def blockwise_loss(model: FaceEncoder, x: torch.Tensor, maps: list[torch.Tensor], descriptors: torch.Tensor,
                   descriptor_mean: torch.Tensor | None = None, dtype: torch.dtype | None = None,
                   chained: bool = False) -> tuple[torch.Tensor, dict, torch.Tensor | None]:
    """Blockwise distillation (Wang et al. 2018, progressive blockwise knowledge distillation;
    FitNets' hints, one per block): a chip_resnet student has the teacher's topology, so each of
    its blocks can be taught on its own, fed the teacher's map before that block and regressed
    onto the teacher's map after it. The stem is fed the chip, the head the teacher's pooled last
    map (its target: the raw descriptor, less `descriptor_mean` where the teacher is centred).
    A block is a local function of a small neighbourhood, so each photo gives it thousands of
    examples: with ~20 k photos this is a well-posed regression, where matching only the final
    embedding (one example per photo) is not. Each term is the squared error relative to the
    target's mean square, so every block counts alike. `chained`: each block is fed the student's
    own map instead, one end-to-end pass with a hint at every block (how the blocks, taught
    apart, are then made to work together); the embedding of that pass is returned too.
    x: the student's input (normalised crops); maps, descriptors: InLoopTeacher.activations.
    -> (mean of the terms, {blockwise: that mean, bw_stem, bw_head, bw_worst: single terms},
    the student's embedding when chained, else None)."""
    b = model.backbone
    with torch.autocast(device_type=x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        preds = [b.stem(b.chips(x))]
        for j in range(len(maps) - 1):
            preds.append(b.block(j, preds[j] if chained else maps[j]))
        preds.append(model.head_fc((preds if chained else maps)[-1].mean((2, 3))))
    target = descriptors if descriptor_mean is None else descriptors - descriptor_mean
    terms = torch.stack([(p.float() - t).pow(2).mean() / t.pow(2).mean().clamp_min(1e-12)
                         for p, t in zip(preds, [*maps, target])])
    loss = terms.mean()
    parts = {"blockwise": loss, "bw_stem": terms[0], "bw_head": terms[-1], "bw_worst": terms.max()}
    return loss, parts, F.normalize(preds[-1].float(), dim=1) if chained else None


@torch.no_grad()
def fit_pool_head(model: FaceEncoder, teacher, crops: torch.Tensor, descriptor_mean: torch.Tensor | None = None,
                  ridge: float = 1e-4, batch: int = 128, dtype: torch.dtype | None = None) -> dict:
    """Set a pool head (one linear layer on the pooled last map) in closed form: ridge least
    squares of the teacher's raw descriptors (less `descriptor_mean`, as blockwise_loss's head
    target) on the student's own pooled features, over `crops` (uint8 B x S x S x 3) and their
    mirror images. The head is the one layer whose best value has a closed form; gradient
    descent on it is slow, because pooled ReLU features share a large common mean (an
    ill-conditioned problem), and after blockwise training the head must fit the student's
    features, not the teacher's. ridge: relative to the mean diagonal of X^T X.
    -> {head_rel_mse_before, head_rel_mse_after, head_fit_photos}: the relative squared error
    of the head's output on these photos, as blockwise_loss measures it."""
    model.eval()
    device = next(model.parameters()).device
    feats, targets = [], []
    for i in range(0, len(crops), batch):
        pixels = torch.cat([p := crops[i:i + batch].permute(0, 3, 1, 2).float(), p.flip(3)]).to(device)
        d = teacher.descriptors(pixels).double().cpu()
        x = pixels_to_input(pixels, model.config.input_size)
        with torch.autocast(device_type=x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            f = model.forward_features(x)
        feats.append(f.float().mean((2, 3)).double().cpu())
        targets.append(d if descriptor_mean is None else d - descriptor_mean.double().cpu())
    before, after = fit_linear(model.head_fc, torch.cat(feats), torch.cat(targets), ridge)
    out = {"head_rel_mse_before": round(before, 5), "head_rel_mse_after": round(after, 5),
           "head_fit_photos": len(crops)}
    return out


def mix_extra(pixels: torch.Tensor, n_pk: int, share: float, gen: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend a share of the rows after the first n_pk (the `extra` photos) with another extra
    photo: x = lam * x_i + (1 - lam) * x_j, lam ~ U(0, 1). The teacher embeds the blend as it
    embeds any view, so the student is taught the teacher's function between faces too, not
    only at the ~20 k photos there are (Beyer et al. 2022, "function matching").
    -> (pixels, mask of the blended rows)."""
    mixed = torch.zeros(len(pixels), dtype=torch.bool)
    n_extra = len(pixels) - n_pk
    if n_extra < 2 or share <= 0:
        return pixels, mixed
    rows = n_pk + torch.randperm(n_extra, generator=gen)[: round(share * n_extra)]
    partners = n_pk + torch.randint(0, n_extra - 1, (len(rows),), generator=gen)
    partners = partners + (partners >= rows).long()     # never the photo itself
    lam = torch.rand(len(rows), generator=gen)[:, None, None, None]
    pixels = pixels.clone()
    pixels[rows] = lam * pixels[rows] + (1 - lam) * pixels[partners]
    mixed[rows] = True
    return pixels, mixed


def train_step(model, optimizer, scaler, data: TrainData, rows: tuple[np.ndarray, np.ndarray], cfg: TrainConfig,
               step: int, miner, loss_fn, device, dist_info: DistInfo = DistInfo(), in_loop=None) -> dict:
    all_rows, local_rows = rows
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 1_009 + dist_info.rank)
    torch.manual_seed(cfg.seed * 7_919 + step * 1_013 + dist_info.rank)  # dropout: a function of step and rank,
    # so a resumed run is the same run
    crops = data.crops[torch.from_numpy(local_rows)]
    idx = torch.from_numpy(all_rows)
    labels = data.labels[idx].to(device)
    if in_loop is not None:
        # one augmented view at the crop's own resolution: the teacher embeds it (as dlib's chip),
        # the student sees it resized to its input
        clean = cfg.teacher_view == "clean"
        pixels = augment_pixels(crops, crops.shape[1], cfg.augment, gen, degrade=not clean)   # the generator is the CPU's
        view = pixels.to(device) if clean else None      # what the teacher embeds: the clean view
        if clean:
            pixels = degrade_pixels(pixels, cfg.augment, gen)
        if cfg.mixup:
            pixels, mixed = mix_extra(pixels, len(local_rows) - len(shard(np.arange(cfg.extra), dist_info)),
                                      cfg.mixup, gen)
            labels = labels.masked_fill(all_gather_with_grad(mixed.float().to(device)) > 0.5, -1)   # a blend has no identity
        pixels = pixels.to(device)
        if cfg.w_blockwise:
            maps, descriptors = in_loop.activations(pixels)
            teacher = all_gather_with_grad(in_loop.embed(descriptors))
        else:
            teacher = all_gather_with_grad(in_loop(pixels if view is None else view))
        x = pixels_to_input(pixels, cfg.encoder.input_size)
    else:
        x = augment(crops, cfg.encoder.input_size, cfg.augment, gen)
        teacher = data.teacher[idx].to(device) if data.teacher is not None else None
    x = x.to(device, non_blocking=True)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for g in optimizer.param_groups:
        g["lr"] = lr_at(step, cfg) * g.get("lr_mult", 1.0)
    model.train()
    dtype = autocast_dtype(cfg, device)
    loss, parts, n_triplets, e_local = torch.zeros((), device=device), {}, 0, None
    if cfg.w_blockwise:
        centre = getattr(in_loop, "descriptor_mean", None) if cfg.center_teacher else None
        bw, bw_parts, e_local = blockwise_loss(model, x, maps, descriptors, centre, dtype,
                                               chained=cfg.blockwise_inputs == "student")
        loss = cfg.w_blockwise * bw
    if cfg.end_to_end:
        if e_local is None:
            with torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                e_local = model(x)
        e = all_gather_with_grad(e_local.float())
        loss_e2e, parts, n_triplets = batch_loss(e, labels, teacher, cfg, miner, loss_fn)
        loss = loss + loss_e2e
    if cfg.w_blockwise:
        parts.update(bw_parts)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    out = {k: v.item() for k, v in parts.items()}
    out["loss"] = loss.item()
    out["triplets"] = n_triplets
    return out


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """float16 on CUDA (with loss scaling), bfloat16 on a CPU with native support, else None."""
    if device.type == "cuda":
        return torch.float16 if cfg.amp else None
    return torch.bfloat16 if cfg.cpu_bf16 and cpu_has_bf16() else None


def train_one_epoch(model, optimizer, scaler, data, sampler, cfg, start_step, end_step, miner, loss_fn,
                    device, bar, log, dist_info: DistInfo = DistInfo(), in_loop=None) -> dict:
    """Steps [start_step, end_step) of the current sampler epoch; checkpoints via `log`."""
    sums, n = {}, 0
    skip = start_step % cfg.eval_every
    for i, batch in enumerate(sampler):
        if i < skip:
            continue
        step = start_step + (i - skip)
        if step >= end_step:
            break
        stats = train_step(model, optimizer, scaler, data, _batch_rows(batch, data, cfg, step, dist_info), cfg,
                           step, miner, loss_fn, device, dist_info, in_loop)
        for k, v in stats.items():
            sums[k] = sums.get(k, 0.0) + v
        n += 1
        bar.update(1)
        if (step + 1) % cfg.log_every == 0:
            bar.set_postfix({k: f"{v:.4f}" for k, v in stats.items() if k != "triplets"}, refresh=False)
            log(step + 1, {"lr": lr_at(step, cfg), **stats})
    return {k: v / max(n, 1) for k, v in sums.items()}


def create_in_loop_teacher(cfg: TrainConfig, data: TrainData, device, n_center: int = 2048):
    """dlib's ResNet in PyTorch, for consistent distillation. Centred like the cache's teacher
    (center_teacher): on its own mean embedding of up to n_center training photos, un-augmented."""
    from .dlib_resnet import InLoopTeacher

    teacher = InLoopTeacher(crop_size=data.crops.shape[1], bf16=autocast_dtype(cfg, device) is torch.bfloat16,
                            device=device, reads_chip=align_config_for(cfg.encoder).geometry == "dlib150")
    if cfg.center_teacher:
        rows = np.random.default_rng([cfg.seed, 2]).permutation(data.train_idx)[:n_center]
        pixels = data.crops[torch.from_numpy(np.sort(rows))].permute(0, 3, 1, 2).float().to(device)
        d = teacher.descriptors(pixels)
        teacher.center = F.normalize(d, dim=1).mean(0)
        teacher.descriptor_mean = d.mean(0)     # where a student started from dlib's weights centres
    return teacher


def create_optimizer(model: FaceEncoder, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; with bias_lr_mult != 1, the biases in a second group, lr x bias_lr_mult, no decay."""
    if cfg.bias_lr_mult == 1.0:
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    named = list(model.named_parameters())
    biases = [p for n, p in named if n.endswith(".bias")]
    rest = [p for n, p in named if not n.endswith(".bias")]
    return torch.optim.AdamW([{"params": rest}, {"params": biases, "lr_mult": cfg.bias_lr_mult, "weight_decay": 0.0}],
                             lr=cfg.lr, weight_decay=cfg.weight_decay)


def init_weights(model: FaceEncoder, cfg: TrainConfig, center: torch.Tensor | None = None) -> None:
    """Start from a trained encoder's weights of the same config (a new schedule and optimiser: a
    warm restart), or ("dlib") from the teacher's own weights, its head's bias set to subtract
    `center` (the raw descriptors' mean, so that the student starts where the centred teacher is)."""
    from .checkpoint import load_checkpoint

    if cfg.init_from == "dlib":
        from .dlib_resnet import chip_encoder_from_dlib

        model.load_state_dict(chip_encoder_from_dlib(cfg.encoder, center=center).state_dict())
        return
    source, _ = load_checkpoint(cfg.init_from)
    if json.loads(json.dumps(source.config.to_dict())) != json.loads(json.dumps(asdict(cfg.encoder))):
        raise ValueError(f"{cfg.init_from} holds another encoder config than this training's: "
                         f"{source.config.to_dict()} vs {asdict(cfg.encoder)}")
    model.load_state_dict(source.state_dict())


def run_training(cfg: TrainConfig, cache: CropCache, out_dir: str | Path, resume: bool = True,
                 stop_at: int | None = None) -> tuple[FaceEncoder, dict]:
    """Train (or resume) to cfg.steps; `stop_at` ends this run early at that step, as an
    interruption would (tests use it to prove that a resumed run equals an uninterrupted one).

    Under torchrun (WORLD_SIZE > 1) every rank runs this: the model is wrapped in
    DistributedDataParallel with batch norm over the global batch, each rank embeds its share
    of every batch, and rank 0 alone evaluates, logs and writes checkpoints."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.device)
    dist_info = init_distributed(device.type)
    if device.type == "cuda" and dist_info.enabled:
        device = torch.device("cuda", dist_info.local_rank)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    data = TrainData.from_cache(cache, cfg)
    model = FaceEncoder(cfg.encoder).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.cpu_bf16 and device.type == "cpu" and not cpu_has_bf16() and dist_info.main:
        print("cpu_bf16: this CPU has no native bfloat16; training in float32", file=sys.stderr)
    optimizer = create_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp and device.type == "cuda")
    step, history = 0, []
    last = out / "last.pt"
    if cfg.w_blockwise and dist_info.enabled:
        raise ValueError("w_blockwise runs in one process for now: its per-block passes bypass "
                         "DistributedDataParallel's gradient hooks")
    in_loop = create_in_loop_teacher(cfg, data, device) if cfg.teacher_in_loop else None
    if cfg.init_from and not (resume and last.exists()):
        init_weights(model, cfg, center=getattr(in_loop, "descriptor_mean", None))
        if dist_info.main:
            print(f"weights from {cfg.init_from}", file=sys.stderr)
    if resume and last.exists():
        state = torch.load(last, map_location="cpu", weights_only=True)
        if state["config"] != json.loads(json.dumps(asdict(cfg))):
            raise ValueError(f"{last} was written with another config; use a new --out or --no-resume")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, history = state["step"], state["history"]
        if dist_info.main:
            print(f"resumed from {last} at step {step}", file=sys.stderr)
    refit = None
    if cfg.refit_head and not (resume and last.exists()) and dist_info.main:
        rows = np.sort(np.random.default_rng([cfg.seed, 3]).permutation(data.train_idx)[:cfg.refit_head])
        before = evaluate(model, data, device)
        fit = fit_pool_head(model, in_loop, data.crops[torch.from_numpy(rows)],
                            getattr(in_loop, "descriptor_mean", None) if cfg.center_teacher else None,
                            dtype=autocast_dtype(cfg, device))
        refit = {"step": 0, **fit, **{f"before_{k}": v for k, v in before.items()}, **evaluate(model, data, device)}
        print(json.dumps({"refit_head": refit}), file=sys.stderr)
    # (under torchrun, DistributedDataParallel's constructor gives every rank rank 0's weights)
    net = model
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        convert_batchnorm(model)
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      broadcast_buffers=False)
    main = dist_info.main
    if main:
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
        n_lab = int((data.labels[torch.from_numpy(data.train_idx)] >= 0).sum())
        print(json.dumps({"train_photos": len(data.train_idx), "labelled": n_lab, "val_pairs": len(data.val_pairs),
                          "teacher": "in_loop" if cfg.teacher_in_loop else data.teacher is not None, "world_size": dist_info.world, "device": str(device),
                          "autocast": str(autocast_dtype(cfg, device) or "off"), "channels_last": cfg.channels_last,
                          "params": sum(p.numel() for p in model.parameters())}), file=sys.stderr)
    sampler = PKSampler(data.labels[torch.from_numpy(data.train_idx)].numpy(), cfg.p, cfg.k, cfg.eval_every, cfg.seed)
    # the sampler draws positions in train_idx; map them back to cache rows
    sampler.groups = [data.train_idx[g] for g in sampler.groups]
    miner, loss_fn = create_miner(cfg.miner, cfg.margin), TripletMarginLoss(cfg.margin)
    logf = open(out / "log.jsonl", "a") if main else None

    def save_state(s):
        if main:
            atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "scaler": scaler.state_dict(), "step": s, "history": history,
                                "config": json.loads(json.dumps(asdict(cfg)))}, last)

    def log(s, stats):
        if main:
            logf.write(json.dumps({"step": s, **{k: round(v, 6) if isinstance(v, float) else v
                                                for k, v in stats.items()}}) + "\n")
            logf.flush()
        if s % cfg.ckpt_every == 0 or s == cfg.steps:
            save_state(s)

    if refit is not None:   # on record, and in last.pt: a resumed run does not refit again
        history.append(refit)
        log(0, {"refit_head": 1.0, **{k: float(v) for k, v in refit.items() if k != "step"}})
    t0, first_step = time.time(), step
    with tqdm(total=cfg.steps, initial=step, desc="train", unit="step", file=sys.stderr, disable=not main) as bar:
        while step < min(cfg.steps, stop_at or cfg.steps):
            epoch = step // cfg.eval_every
            sampler.set_epoch(epoch)
            end = min(cfg.steps, (epoch + 1) * cfg.eval_every, stop_at or cfg.steps)
            stats = train_one_epoch(net, optimizer, scaler, data, sampler, cfg, step, end, miner, loss_fn,
                                    device, bar, log, dist_info, in_loop)
            step = end
            if step % cfg.eval_every and step != cfg.steps:   # interrupted mid-epoch: save, no evaluation
                save_state(step)
                break
            if main:
                metrics = evaluate(model, data, device)
                history.append({"step": step, **{k: round(v, 5) for k, v in stats.items()}, **metrics})
                print(json.dumps(history[-1]), file=sys.stderr)
                log(step, {"eval": 1.0, **{k: float(v) for k, v in metrics.items()}})
            if step % cfg.ckpt_every:
                save_state(step)
    if logf:
        logf.close()
    model.eval()
    if step == first_step and (out / "summary.json").exists():
        # nothing left to train (a finished run exported again): keep the run's own summary,
        # with its real time and throughput
        return model, json.loads((out / "summary.json").read_text())
    seconds = time.time() - t0
    summary = {"steps": cfg.steps, "seconds_this_run": round(seconds, 1),
               "photos_per_second": round((step - first_step) * (cfg.p * cfg.k + cfg.extra) / max(seconds, 1e-9), 1),
               "final": history[-1] if history else {}, "history": history, "world_size": dist_info.world}
    if main:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return model, summary
