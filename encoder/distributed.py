"""Data-parallel training across processes (torchrun): several GPUs or nodes, or CPU processes
with gloo (how the tests prove the arithmetic).

Each rank embeds its shard of the P x K batch; the embeddings are all-gathered with their
gradients, so mining and the loss see the whole batch on every rank, exactly as one process
would. Batch norm statistics are all-reduced too (SyncBatchNorm of this module: torch's own
works on GPUs only), so one step on N processes gives the gradients of one process on the
whole batch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """From torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows in rank order; gradients flow back to each rank's rows."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return torch.cat(dist_fn.all_gather(x), dim=0)


def shard(items: list, info: DistInfo) -> list:
    """Rank r's contiguous share of a batch (the same split as `all_gather_with_grad` joins)."""
    n = len(items)
    lo, hi = n * info.rank // info.world, n * (info.rank + 1) // info.world
    return items[lo:hi]


class DistBatchNorm(nn.Module):
    """Batch norm whose batch statistics are those of the global batch across all ranks.

    A drop-in for nn.BatchNorm1d/2d (same parameters and buffers, so checkpoints load into
    either). Works on the CPU with gloo and on GPUs; a single process is plain batch norm."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.num_features, self.eps, self.momentum = bn.num_features, bn.eps, bn.momentum
        self.weight, self.bias = bn.weight, bn.bias
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        dims = [0] + list(range(2, x.dim()))
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        s, sq = x.sum(dims), (x * x).sum(dims)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            stats = dist_fn.all_reduce(torch.cat([s, sq, count]))
            s, sq, count = stats[:len(s)], stats[len(s):2 * len(s)], stats[-1:]
        mean = s / count
        var = sq / count - mean * mean
        with torch.no_grad():
            self.num_batches_tracked += 1
            unbiased = var * count / (count - 1).clamp_min(1)
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * unbiased)
        shape = [1, -1] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d/2d by DistBatchNorm, sharing its parameters and buffers."""
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
            setattr(module, name, DistBatchNorm(child))
        else:
            convert_batchnorm(child)
    return module
