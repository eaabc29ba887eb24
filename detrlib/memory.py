"""Peak memory of a device since the last reset: what a training run or a benchmark needed at most.

On a GPU it is PyTorch's own count of allocated tensor memory. On a CPU it is the peak resident
memory of the whole process (Linux's ``VmHWM``, which writing ``5`` to ``/proc/self/clear_refs``
resets): model, data and Python alike, the number that decides whether a laptop runs out of memory.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

_STATUS, _CLEAR = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def reset_peak_memory(device: torch.device) -> None:
    """Start counting the peak afresh (on a CPU, where the operating system allows it)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:
            _CLEAR.write_text("5")
        except OSError:  # not Linux, or not allowed: the peak then counts from the process start
            pass


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak memory in MiB since the last :func:`reset_peak_memory`; None where it cannot be read."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        match = re.search(r"^VmHWM:\s+(\d+) kB", _STATUS.read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) / 1024 if match else None
