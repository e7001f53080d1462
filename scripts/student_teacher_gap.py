"""How far a student is from its teacher, and whether its features could get closer (diagnostic,
session 8; docs/encoder/experiments/student_teacher_gap.json).

For the s96fm encoder (runs/s96fm_base.pt = git show a342efe:encoder/weights/default.pt) on the
training crop cache: the cosine between its embedding of a clean (un-augmented) photo and the
teacher's cached, centred embedding, on 8,000 training photos and on the 503 photos of the
held-out validation people; then ridge regressions from its features (after the head's batch
norm: globally pooled, 256-d, or the flattened 256 x 6 x 6 map the head's linear layer reads) to
the teacher's embedding, fitted on the training photos, scored on the validation photos.
Run from the repository root: .venv/bin/python scripts/student_teacher_gap.py (1 thread, ~20 min).
"""
import json, torch, numpy as np, torch.nn.functional as F
torch.set_num_threads(1)
from encoder.crop_cache import CropCache
from encoder.train import TrainConfig, TrainData
from encoder.face_encoder import EncoderConfig, preprocess
from encoder.checkpoint import load_checkpoint
cfg = json.load(open("configs/s96_fm2.json")); enc = cfg.pop("encoder")
tc = TrainConfig(encoder=EncoderConfig(**enc), **{k: v for k, v in cfg.items() if k in TrainConfig.__dataclass_fields__})
data = TrainData.from_cache(CropCache(".cache/facegate/crops/1af2d8b0b91e071d"), tc)
m, _ = load_checkpoint("runs/s96fm_base.pt"); m.eval()
val = np.unique(data.val_pairs[:, :2])
rng = np.random.default_rng(0); tr = np.sort(rng.choice(data.train_idx, 8000, replace=False))
@torch.no_grad()
def feats(rows):
    out, emb = [], []
    for i in range(0, len(rows), 256):
        x = preprocess(data.crops[torch.from_numpy(rows[i:i+256])], 96)
        f = m.forward_features(x); h = m.head_bn(f)
        out.append(torch.cat([h.mean((2, 3)), h.flatten(1)], 1)); emb.append(m.forward_head(f))
    return torch.cat(out).double(), torch.cat(emb)
Xtr, Etr = feats(tr); Xva, Eva = feats(val)
Ttr, Tva = data.teacher[torch.from_numpy(tr)].double(), data.teacher[torch.from_numpy(val)].double()
print("student head cos: train", (Etr.double()*Ttr).sum(1).mean().item(), "val", (Eva.double()*Tva).sum(1).mean().item())
for name, sl in (("gap256", slice(0, 256)), ("flat9216", slice(256, None))):
    A, B = Xtr[:, sl], Xva[:, sl]
    mu, sd = A.mean(0), A.std(0) + 1e-6
    A, B = (A - mu) / sd, (B - mu) / sd
    for lam in (1.0, 100.0, 1000.0):
        if A.shape[1] > 2000:
            W = A.T @ torch.linalg.solve(A @ A.T + lam * torch.eye(len(A), dtype=A.dtype), Ttr)
        else:
            W = torch.linalg.solve(A.T @ A + lam * torch.eye(A.shape[1], dtype=A.dtype), A.T @ Ttr)
        ctr = F.normalize(A @ W, dim=1); cva = F.normalize(B @ W, dim=1)
        print(name, lam, "train cos", round((ctr * Ttr).sum(1).mean().item(), 4), "val cos", round((cva * Tva).sum(1).mean().item(), 4), flush=True)
