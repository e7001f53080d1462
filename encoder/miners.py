"""Online triplet miners: which (anchor, positive, negative) triplets of a batch to train on.

A miner runs under no_grad and returns index tensors; the loss is computed elsewhere.
Labels < 0 mark unlabelled photos: never an anchor, positive or negative.
"""
from __future__ import annotations

import torch


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x, x).clamp_min(0)


def _masks(labels: torch.Tensor):
    known = labels >= 0
    same = (labels[:, None] == labels[None, :]) & known[:, None] & known[None, :]
    pos = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    neg = ~same & known[:, None] & known[None, :]
    return pos, neg


class SemiHardMiner:
    """FaceNet's semi-hard negatives: farther than the positive, but within the margin.

    Every (a, p, n) with 0 < d(a, n) - d(a, p) < margin is returned."""

    def __init__(self, margin: float = 0.2):
        self.margin = margin

    @torch.no_grad()
    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor):
        d = pairwise_distances(embeddings.detach())
        pos, neg = _masks(labels)
        a, p = torch.nonzero(pos, as_tuple=True)
        gap = d[a] - d[a, p][:, None]                    # (pairs, batch): d[a, n] - d[a, p]
        keep = (gap > 0) & (gap < self.margin) & neg[a]
        pair_i, n = torch.nonzero(keep, as_tuple=True)
        return a[pair_i], p[pair_i], n


class BatchHardMiner:
    """Hermans et al.'s batch-hard: per anchor, its farthest positive and its nearest negative."""

    @torch.no_grad()
    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor):
        d = pairwise_distances(embeddings.detach())
        pos, neg = _masks(labels)
        anchors = torch.nonzero(pos.any(1) & neg.any(1), as_tuple=True)[0]
        inf = torch.finfo(d.dtype).max
        p = d[anchors].masked_fill(~pos[anchors], -1.0).argmax(1)
        n = d[anchors].masked_fill(~neg[anchors], inf).argmin(1)
        return anchors, p, n


MINERS = {"semihard": SemiHardMiner, "batchhard": BatchHardMiner}


def create_miner(name: str, margin: float = 0.2):
    if name not in MINERS:
        raise ValueError(f"unknown miner {name!r}; known: {sorted(MINERS)}")
    return MINERS[name](margin) if name == "semihard" else MINERS[name]()
