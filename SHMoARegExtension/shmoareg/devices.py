"""Compute device choice and peak-memory readings."""

from __future__ import annotations

import sys

import psutil
import torch

try:
    import resource
except ImportError:  # Windows
    resource = None

from shmoareg.errors import InputError
from shmoareg.protocol import DEVICES



def resolve_device(choice: str) -> torch.device:
    """``auto`` picks the GPU when torch sees one; ``cuda`` without a GPU is a clear input error."""
    if choice not in DEVICES:
        raise InputError(f"unknown device {choice!r}; use one of {', '.join(DEVICES)}")
    if choice == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if choice == "cuda":
        build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise InputError(f"--device cuda was asked for but torch {torch.__version__} ({build}) sees no GPU; "
                         "use --device cpu or --device auto")
    return torch.device("cpu")


def reset_host_peak_memory() -> bool:
    """Restart this process's peak resident memory (what :func:`peak_memory_mb` reads) from its current size, so
    that each of several runs in one process reports its own peak. Linux only (``/proc/self/clear_refs``);
    returns False where it could not."""
    try:
        with open("/proc/self/clear_refs", "w") as control:
            control.write("5")
        return True
    except OSError:
        return False


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process (and peak GPU memory on CUDA), in MiB."""
    if resource is not None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_mb = peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux
    else:
        peak_mb = psutil.Process().memory_info().peak_wset / 2**20
    result = {"host_peak_mb": round(peak_mb, 1)}
    if device.type == "cuda":
        result["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return result
