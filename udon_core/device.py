"""Device selection: CUDA when present, otherwise the CPU (the default path everywhere); the CPU cores a
process may use."""

from __future__ import annotations

import os

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA when a GPU is visible, else the CPU; anything else is passed to torch.device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def usable_cores() -> int:
    """The CPU cores this process may use (its affinity: a container's or ``taskset``'s limit), at least 1.

    why not ``os.cpu_count()``: it counts the machine's cores, so a pod limited to 4 of 64 would start 64
    worker processes.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity on this platform (macOS)
        return max(1, os.cpu_count() or 1)
