"""FaceNet's triplet loss: max(0, d(a, p) - d(a, n) + margin), averaged over the mined triplets."""
from __future__ import annotations

import torch
from torch import nn


class TripletMarginLoss(nn.Module):
    """Euclidean distances between (L2-normalised) embeddings, as everywhere in facegate.

    `indices` is a miner's (anchor_idx, positive_idx, negative_idx). With no triplet the loss
    is a zero that still belongs to the graph, so a step without triplets is a valid no-op."""

    def __init__(self, margin: float = 0.2):
        super().__init__()
        if margin <= 0:
            raise ValueError(f"margin must be positive, got {margin}")
        self.margin = margin

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor,
                indices: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        a, p, n = indices
        if len(a) == 0:
            return embeddings.sum() * 0.0
        d_ap = (embeddings[a] - embeddings[p]).norm(dim=1)
        d_an = (embeddings[a] - embeddings[n]).norm(dim=1)
        return torch.relu(d_ap - d_an + self.margin).mean()
