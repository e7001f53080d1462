"""Gate checkpoints: one small file each, loaded with no network and no pickled code."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn


def atomic_save(obj, path: str | Path) -> None:
    """torch.save to `name.tmp`, fsync, rename: a reader sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_gate(path: str | Path, fmt: str, model_args: dict, model: nn.Module, **meta) -> None:
    """Write atomically: {format, model_args, state_dict, **meta}."""
    atomic_save({"format": fmt, "model_args": model_args,
                 "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, **meta}, path)


def load_gate(path: Path, fmt: str, net_cls: type[nn.Module], what: str,
              device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """-> (the network in eval mode, on `device`, the checkpoint without its weights)."""
    if not path.exists():
        raise FileNotFoundError(f"{what} checkpoint {path} does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("format") != fmt:
        raise ValueError(f"{path} is not a {fmt} checkpoint")
    model = net_cls(**ckpt["model_args"])
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()})
    return model.to(device).eval(), {k: v for k, v in ckpt.items() if k != "state_dict"}
