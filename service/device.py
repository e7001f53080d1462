"""Where the face models run (`serve --device`, Settings.device): the encoder, MTCNN and the gates.

cpu, cuda (or cuda:N), or auto (cuda when PyTorch sees a GPU, else cpu). Asking for CUDA where
there is none stops the start with a clear FAILED_PRECONDITION, never a silent fall-back."""
from __future__ import annotations

import torch

from .errors import FailedPrecondition


def resolve_device(name: str) -> torch.device:
    """The torch device for a Settings.device value."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        built = (f"built with CUDA {torch.version.cuda}, but no GPU or driver is visible"
                 if torch.version.cuda else "a build without CUDA")
        raise FailedPrecondition(f"--device {name}: CUDA is not available here (PyTorch {torch.__version__}, "
                                 f"{built}); use --device cpu, or auto to take a GPU only where there is one")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise FailedPrecondition(f"--device {name}: there are {count} CUDA device(s) here, numbered from 0")
    return device


def describe(device: torch.device) -> str:
    """For the start-up log: the device and, for a GPU, its name."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
