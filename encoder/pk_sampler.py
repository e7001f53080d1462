"""P identities x K photos per batch, as FaceNet and batch-hard mining need."""
from __future__ import annotations

from collections import defaultdict

import numpy as np


class PKSampler:
    """Yields `batches` lists of P*K indices: P distinct identities with >= 2 photos, K photos
    each (drawn without replacement when the identity has K or more, with replacement otherwise:
    augmentation then makes the repeats differ). Labels < 0 (unlabelled) are never drawn.
    Seeded; `set_epoch` gives each epoch its own, reproducible order."""

    def __init__(self, labels, p: int, k: int, batches: int, seed: int = 0):
        by_label = defaultdict(list)
        for i, y in enumerate(np.asarray(labels)):
            if y >= 0:
                by_label[int(y)].append(i)
        self.groups = [np.array(v) for _, v in sorted(by_label.items()) if len(v) >= 2]
        if len(self.groups) < p:
            raise ValueError(f"P={p} identities per batch, but only {len(self.groups)} have 2 or more photos")
        if k < 2:
            raise ValueError(f"K must be >= 2 to form positive pairs, got {k}")
        self.p, self.k, self.batches, self.seed, self.epoch = p, k, batches, seed, 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self):
        return self.batches

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        for _ in range(self.batches):
            batch = []
            for g in rng.choice(len(self.groups), self.p, replace=False):
                idx = self.groups[g]
                batch.extend(rng.choice(idx, self.k, replace=len(idx) < self.k).tolist())
            yield batch
