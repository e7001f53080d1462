"""Data-parallel training, proven on the CPU with gloo: one step on 2 processes gives the
gradients of one process on the whole batch (relative tolerance 1e-4)."""
from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from encoder.distributed import DistInfo, all_gather_with_grad, convert_batchnorm, shard
from encoder.face_encoder import EncoderConfig, FaceEncoder
from encoder.miners import create_miner
from encoder.train import TrainConfig, _batch_rows, batch_loss
from encoder.triplet_margin_loss import TripletMarginLoss

CFG = TrainConfig(encoder=EncoderConfig(input_size=32, dropout=0.0,
                                        backbone_args={"widths": (8, 16, 16, 32), "depths": (1, 1, 1, 1)}),
                  margin=0.5)
WORLD = 2


def make_batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 32, 32, generator=g)
    labels = torch.arange(8).repeat_interleave(2)            # P=8 identities x K=2
    teacher = F.normalize(torch.randn(16, 128, generator=g), dim=1)
    return x, labels, teacher


def step_loss(model_call, x, labels, teacher):
    e = model_call(x)
    return batch_loss(e, labels, teacher, CFG, create_miner(CFG.miner, CFG.margin), TripletMarginLoss(CFG.margin))


def worker(rank, port, folder):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    try:
        x, labels, teacher = make_batch()
        model = FaceEncoder(CFG.encoder)
        model.load_state_dict(torch.load(os.path.join(folder, "init.pt"), weights_only=True))
        convert_batchnorm(model)
        ddp = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
        mine = shard(list(range(len(x))), DistInfo(rank, WORLD))
        loss, parts, n = step_loss(lambda xs: all_gather_with_grad(ddp(xs[mine])), x, labels, teacher)
        loss.backward()
        torch.save({"grads": {k: p.grad for k, p in model.named_parameters()},
                    "buffers": {k: b for k, b in model.named_buffers()}, "loss": loss.detach(), "triplets": n},
                   os.path.join(folder, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_give_the_gradients_of_one_process(tmp_path):
    torch.manual_seed(1)
    ref = FaceEncoder(CFG.encoder)
    torch.save(ref.state_dict(), tmp_path / "init.pt")
    ref.train()
    x, labels, teacher = make_batch()
    loss, parts, n = step_loss(ref, x, labels, teacher)
    loss.backward()
    assert n > 0 and parts["triplet"] > 0 and parts["relation"] > 0    # every part of the loss is at work

    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["triplets"] == n
        torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
        for k, p in ref.named_parameters():
            torch.testing.assert_close(got["grads"][k], p.grad, rtol=1e-4, atol=1e-6, msg=f"rank {rank}: {k}")
        for k, b in ref.named_buffers():     # batch-norm statistics of the global batch
            torch.testing.assert_close(got["buffers"][k].to(b.dtype), b, rtol=1e-4, atol=1e-6, msg=k)


def test_plain_batchnorm_would_not_be_equivalent(tmp_path):
    """The reason DistBatchNorm exists: per-shard statistics change the gradients."""
    torch.manual_seed(1)
    ref = FaceEncoder(CFG.encoder).train()
    x, labels, teacher = make_batch()
    e_whole = ref(x)
    e_shards = torch.cat([ref(x[:8]), ref(x[8:])])
    assert not torch.allclose(e_whole, e_shards, rtol=1e-3, atol=1e-4)


def test_batches_are_sharded_by_identity_and_rejoined_in_rank_order():
    class Data:
        train_idx = np.arange(100, 200)

    cfg = TrainConfig(p=4, k=2, extra=4)
    pk = [0, 0, 1, 1, 2, 2, 3, 3]
    whole, _ = _batch_rows(pk, Data, cfg, step=5)
    parts = [_batch_rows(pk, Data, cfg, step=5, dist_info=DistInfo(r, 2)) for r in range(2)]
    assert np.array_equal(parts[0][0], parts[1][0])                  # every rank knows the whole batch
    r0, r1 = parts[0][1], parts[1][1]
    assert r0[:4].tolist() == [0, 0, 1, 1] and r1[:4].tolist() == [2, 2, 3, 3]   # P/2 identities each
    assert np.array_equal(np.concatenate([r0, r1]), parts[0][0])
    assert sorted(parts[0][0].tolist()) == sorted(whole.tolist())    # the same photos as one process
