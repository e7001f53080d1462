"""Which arithmetic the network runs in on this machine.

A checkpoint records the arithmetic it was calibrated in (`preprocessing.precision`). bfloat16
autocast pays only where the hardware computes bfloat16 natively: a CPU with AVX512-BF16 or AMX
(oneDNN), or a GPU that supports it. Elsewhere PyTorch emulates it, and a bfloat16 encoder runs
*slower* than in float32: the shipped chip_resnet, 1 thread, both views of a face, took 147 ms
emulated against 22 ms in float32 on an AVX2-only AMD EPYC (6 ms in bfloat16 on a CPU that computes it natively).
There the embedder computes in float32 instead: the same weights (bfloat16 values are exact in
float32) without bfloat16's rounding of the activations, so the embeddings differ from the
calibrated arithmetic's by that rounding only (tests/encoder/test_checkpoint.py measures it).
FACEGATE_PRECISION=bfloat16 or float32 overrides the choice; the default is "auto".
"""
from __future__ import annotations

import functools
import os
import platform

import torch

CHOICES = ("auto", "bfloat16", "float32")


def _cpuinfo(field: str) -> str | None:
    """The first CPU's `field` in /proc/cpuinfo, or None where there is no such file or field."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.split(":", 1)[0].strip() == field), None)
    except OSError:
        return None


def cpu_flags() -> set[str] | None:
    """The x86 feature flags of /proc/cpuinfo, or None where there is no such file."""
    flags = _cpuinfo("flags")
    return None if flags is None else set(flags.split())


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); else PyTorch emulates
    it, slower than float32. oneDNN's own check (a private PyTorch call, so any failure reads as
    'no') also says yes on AVX-512 CPUs without AVX512-BF16, where bfloat16 is emulated with
    AVX-512; on x86 the CPU's flags must name AVX512-BF16 or AMX-BF16 too, where they can be read."""
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
    flags = cpu_flags()
    if not onednn or flags is None or platform.machine().lower() not in ("x86_64", "amd64"):
        return onednn
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


def runtime_bf16(declared: str, device: torch.device, choice: str | None = None) -> bool:
    """Whether an encoder calibrated in `declared` precision runs under bfloat16 autocast here:
    only a bfloat16 checkpoint does, and by default only where bfloat16 is native. `choice`
    (auto, bfloat16, float32) is the caller's; None reads FACEGATE_PRECISION."""
    source = "FACEGATE_PRECISION" if choice is None else "precision"
    choice = os.environ.get("FACEGATE_PRECISION", "auto") if choice is None else choice
    if choice not in CHOICES:
        raise ValueError(f"{source}={choice!r}: expected one of {', '.join(CHOICES)}")
    if declared != "bfloat16" or choice == "float32":
        return False
    return choice == "bfloat16" or native_bf16(device)


def machine_info() -> dict:
    """What a speed figure was measured on: the CPU's name, the vector instructions PyTorch
    uses there, and whether bfloat16 is native (benchmarks record it beside their timings)."""
    name = _cpuinfo("model name") or platform.processor() or platform.machine()
    return {"cpu": name, "cpus": os.cpu_count(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_native": cpu_has_bf16()}
