"""A chip_resnet student refit block by block in closed form, each block fed the student's own map.

After blockwise distillation (train.blockwise_loss) each block of the student approximates the
teacher's block at the same place, but the errors compound down the chain: with the teacher's
stem and first six blocks in front of the student's rest, the student gains 2.5 points of
held-out TAR at FAR 1e-3 (measured by swapping blocks; git history, commit 195ebea), and
gradient descent on the chained hints had plateaued. This is train.fit_pool_head carried down the
network: in order from the input, the *second* convolution of each residual block is set by
ridge least squares so that the block's residual sum, computed from the student's own input map
and its own hidden map (the first convolution is kept), equals the teacher's residual sum at the
same place (its pre-activation). Each block thus corrects what the blocks before it, as refit,
still get wrong. The teacher's maps are only targets: knowledge distillation with a closed-form
solver. The stem is never refit: its input is the same chip in both networks, so a least-squares
fit there would reproduce the teacher's own weights rather than fit the student's. Last, the
pool head is refit on the student's final pooled map, as fit_pool_head does.

The closed form keeps each block's first convolution, so the hidden map it fits from is the one
gradient training left. refine_block (optional, refine_epochs) then trains both convolutions of
the block, still fed the student's own chained map and still only that block, a few passes of
Adam on the squared error of the two outputs, before the chain moves on.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from .backbones import ChipResNet, dlib_common_size
from .face_encoder import FaceEncoder
from .schedule import cosine


def _slices(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


@torch.no_grad()
def block_pre_activation(net: ChipResNet, j: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Block j of a ChipResNet on its input map x -> (its hidden map, its residual sum before the
    final ReLU, its shortcut brought to the sum's size). ChipResNet.block(j, x) is relu of the sum."""
    down = net.block_downsamples[j]
    h = F.relu(net.convs[1 + 2 * j](x))
    y = net.convs[2 + 2 * j](h)
    y, shortcut = dlib_common_size(y, F.avg_pool2d(x, 2, 2) if down else x)
    return h, y + shortcut, shortcut


def ridge_solve(gram: torch.Tensor, xty: torch.Tensor, ridge: float) -> torch.Tensor:
    """argmin_W |X W - Y|^2 + ridge * mean(diag X^T X) |W|^2 from X^T X and X^T Y -> W^T (out x in)."""
    g = gram + ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
    return torch.linalg.solve(g, xty).T


@torch.no_grad()
def refit_block(student: ChipResNet, teacher: ChipResNet, j: int, s_maps: torch.Tensor, t_maps: torch.Tensor,
                positions: int = 256, ridge: float = 1e-4, relu_aware: bool = True,
                gen: torch.Generator | None = None, batch: int = 64) -> dict:
    """Set the second convolution of student block j (in place) by ridge least squares over the
    views whose input maps to block j are s_maps (the student's) and t_maps (the teacher's).
    positions: output positions sampled per view (all where the map has fewer).
    relu_aware: where the teacher's sum is <= 0 (its ReLU off), the target is the student's own
    current sum clipped at 0 rather than the teacher's negative value: any value <= 0 gives the
    same output, so the fit is spent on what the block passes on.
    -> {rel_mse_before, rel_mse_after}: the block's output error relative to the teacher's output's
    mean square, on these views, before and after."""
    conv = student.convs[2 + 2 * j]
    c_out, c_in, k, _ = conv.weight.shape
    dims = c_in * k * k + 1
    gram = torch.zeros(dims, dims, dtype=torch.float64)
    xty = torch.zeros(dims, c_out, dtype=torch.float64)
    err, norm = 0.0, 0.0
    for sl in _slices(len(s_maps), batch):
        h_s, pre_s, shortcut = block_pre_activation(student, j, s_maps[sl].float())
        _, pre_t, _ = block_pre_activation(teacher, j, t_maps[sl].float())
        err += float((F.relu(pre_s) - F.relu(pre_t)).pow(2).sum())
        norm += float(F.relu(pre_t).pow(2).sum())
        goal = torch.where(pre_t > 0, pre_t, pre_s.clamp(max=0)) if relu_aware else pre_t
        hh, ww = h_s.shape[2:]                      # the convolution keeps its input's size; where the
        target = (goal - shortcut)[:, :, :hh, :ww].flatten(2)    # sum is larger, only the shortcut is there
        cols = F.unfold(h_s, k, padding=conv.padding[0])          # B x (C_in k k) x P, conv2's patches
        n, p = cols.shape[0], cols.shape[2]
        if p > positions:
            idx = torch.stack([torch.randperm(p, generator=gen)[:positions] for _ in range(n)])
            cols = torch.gather(cols, 2, idx[:, None].expand(-1, cols.shape[1], -1))
            target = torch.gather(target, 2, idx[:, None].expand(-1, c_out, -1))
        xs = cols.transpose(1, 2).reshape(-1, dims - 1)
        xs = torch.cat([xs, torch.ones(len(xs), 1, dtype=xs.dtype)], 1)
        ys = target.transpose(1, 2).reshape(-1, c_out)
        gram += (xs.T @ xs).double()
        xty += (xs.T @ ys).double()
    w = ridge_solve(gram, xty, ridge)
    conv.weight.copy_(w[:, :-1].reshape(c_out, c_in, k, k).to(conv.weight))
    conv.bias.copy_(w[:, -1].to(conv.bias))
    after = 0.0
    for sl in _slices(len(s_maps), batch):
        _, pre_s, _ = block_pre_activation(student, j, s_maps[sl].float())
        _, pre_t, _ = block_pre_activation(teacher, j, t_maps[sl].float())
        after += float((F.relu(pre_s) - F.relu(pre_t)).pow(2).sum())
    return {"rel_mse_before": round(err / norm, 5), "rel_mse_after": round(after / norm, 5)}


def refine_block(student: ChipResNet, j: int, s_maps: torch.Tensor, target: torch.Tensor, epochs: int,
                 lr: float = 3e-4, batch: int = 64, gen: torch.Generator | None = None,
                 before: float | None = None, bf16: bool = False) -> dict:
    """Both convolutions of student block j (in place) trained by Adam, a cosine schedule over
    `epochs` passes, to bring the block's output on s_maps (the student's own input maps) to
    `target` (the teacher's block output, after its ReLU; the loss is the squared error of the two
    outputs, which is what rel_mse measures, so a negative teacher sum asks only for a
    non-positive one). Where the closed form (refit_block) keeps the first convolution and fits the
    second to a fixed hidden map, this moves the hidden map too. Everything else stays frozen.
    before: the error as it stands, where the caller has just measured it (refit_block's
    rel_mse_after), which saves a pass over the views. bf16: the block's forward and backward
    under bfloat16 autocast (the weights, Adam's state and the loss stay float32): 1.3-2x faster
    per step on a CPU with AMX, for the hidden map's rounding.
    -> {rel_mse_before, rel_mse_after} on these views."""
    convs = [student.convs[1 + 2 * j], student.convs[2 + 2 * j]]
    params = [q for c in convs for q in (c.weight, c.bias)]
    n = len(s_maps)
    norm = float(sum(target[sl].float().pow(2).sum() for sl in _slices(n, 256)))

    def rel_error() -> float:
        with torch.no_grad():
            return sum(float((student.block(j, s_maps[sl].float()) - target[sl].float()).pow(2).sum())
                       for sl in _slices(n, 256)) / norm

    before = rel_error() if before is None else before
    keep = [q.requires_grad for q in student.parameters()]
    for q in student.parameters():
        q.requires_grad_(False)
    for q in params:
        q.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    steps, step = epochs * math.ceil(n / batch), 0
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen)
            for sl in _slices(n, batch):
                idx = order[sl]
                for g in opt.param_groups:
                    g["lr"] = cosine(step / steps, lr)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    out = student.block(j, s_maps[idx].float())
                loss = (out.float() - target[idx].float()).pow(2).sum() / (norm / n * len(idx))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
    for q, k in zip(student.parameters(), keep):
        q.requires_grad_(k)
    return {"rel_mse_before": round(before, 5), "rel_mse_after": round(rel_error(), 5)}


@torch.no_grad()
def fit_linear(layer: torch.nn.Linear, f: torch.Tensor, y: torch.Tensor, ridge: float = 1e-4) -> tuple[float, float]:
    """Set a linear layer with its bias (in place) by ridge least squares of y on f (N x in,
    N x out) -> the relative squared error of its output on these rows, before and after."""
    x = torch.cat([f.double().cpu(), torch.ones(len(f), 1, dtype=torch.float64)], 1)
    y = y.double().cpu()
    rel = lambda w_: float(((x @ w_.T - y) ** 2).mean() / (y ** 2).mean())
    before = rel(torch.cat([layer.weight.double().cpu(), layer.bias.double().cpu()[:, None]], 1))
    w = ridge_solve(x.T @ x, x.T @ y, ridge)
    layer.weight.copy_(w[:, :-1].to(layer.weight))
    layer.bias.copy_(w[:, -1].to(layer.bias))
    return before, rel(w)


@torch.no_grad()
def refit_head(student: FaceEncoder, teacher: FaceEncoder, s_maps: torch.Tensor, t_maps: torch.Tensor,
               ridge: float = 1e-4) -> dict:
    """The pool head in closed form: the teacher's head output (its raw descriptor) regressed on
    the student's pooled last map, as train.fit_pool_head sets it."""
    s_pooled, t_pooled = s_maps.float().mean((2, 3)), t_maps.float().mean((2, 3))
    before, after = fit_linear(student.head_fc, s_pooled, teacher.head_fc(t_pooled), ridge)
    return {"rel_mse_before": round(before, 5), "rel_mse_after": round(after, 5)}


@torch.no_grad()
def refit_chain(student: FaceEncoder, teacher: FaceEncoder, inputs: Iterable[torch.Tensor],
                blocks: Iterable[int] | None = None, positions: int = 256, ridge: float = 1e-4,
                relu_aware: bool = True, head: bool = True, seed: int = 0,
                refine_epochs: int = 0, refine_lr: float = 3e-4, maps_dtype: torch.dtype = torch.float32,
                refine_bf16: bool = False,
                log: Callable[[str], None] | None = None) -> dict:
    """Refit `blocks` of the student (default all; in order from the input) and then its head, in
    place. inputs: batches of the encoder's input (normalised crops, mirror images included as the
    caller wants them); every view's maps are kept in memory for the pass, as maps_dtype (~0.3 MB
    per view at the first block in float32, both networks; bfloat16 halves it). Both models must be
    chip_resnet encoders with a pool head. refine_epochs > 0: after its closed form, each chosen
    block's two convolutions are trained further on the same views (refine_block).
    refine_bf16: refine_block's training under bfloat16 autocast.
    -> {"blocks": {blockJ: refit_block's report, with "refine":
    refine_block's}, "head": refit_head's report, "views", "seconds"}."""
    t0 = time.time()
    s, t = student.backbone, teacher.backbone
    if not (isinstance(s, ChipResNet) and isinstance(t, ChipResNet)) or s.stages != t.stages:
        raise ValueError("refit_chain needs two chip_resnet encoders of the same topology")
    student.eval()
    teacher.eval()
    s_maps, t_maps = [], []
    for x in inputs:
        s_maps.append(s.stem(s.chips(x)).to(maps_dtype))
        t_maps.append(t.stem(t.chips(x)).to(maps_dtype))
    s_maps, t_maps = torch.cat(s_maps), torch.cat(t_maps)
    n_blocks = len(s.block_downsamples)
    chosen = set(range(n_blocks) if blocks is None else blocks)
    gen = torch.Generator().manual_seed(seed)
    report = {"views": len(s_maps), "positions": positions, "ridge": ridge, "relu_aware": relu_aware,
              "refine_epochs": refine_epochs, "refine_lr": refine_lr,
              "refine_bf16": refine_bf16, "maps_dtype": str(maps_dtype), "blocks": {}}
    forward = lambda net, maps: torch.cat([net.block(j, maps[sl].float()).to(maps_dtype)
                                           for sl in _slices(len(maps), 64)])
    for j in range(n_blocks):
        r: dict = {}
        if j in chosen:
            report["blocks"][f"block{j}"] = r
        if j in chosen:
            r.update(refit_block(s, t, j, s_maps, t_maps, positions, ridge, relu_aware, gen))
            if log:
                log(f"block{j}: relative error of its output {r['rel_mse_before']:.4f} -> "
                    f"{r['rel_mse_after']:.4f} ({time.time() - t0:.0f} s)")
        t_maps = forward(t, t_maps)
        if j in chosen and refine_epochs > 0:
            r["refine"] = refine_block(s, j, s_maps, t_maps, refine_epochs, refine_lr, gen=gen,
                                       before=r.get("rel_mse_after"), bf16=refine_bf16)
            if log:
                log(f"block{j}: both convolutions trained, {r['refine']['rel_mse_before']:.4f} -> "
                    f"{r['refine']['rel_mse_after']:.4f} ({time.time() - t0:.0f} s)")
        s_maps = forward(s, s_maps)
    if head:
        report["head"] = refit_head(student, teacher, s_maps, t_maps, ridge)
        if log:
            log(f"head: {report['head']['rel_mse_before']:.4f} -> {report['head']['rel_mse_after']:.4f}")
    report["seconds"] = round(time.time() - t0, 1)
    return report
