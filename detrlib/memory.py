"""Peak memory of a device since the last reset: what a training run or a benchmark needed at most.

On a GPU, PyTorch's count of allocated tensor memory; on a CPU, the whole process's peak resident memory (Linux's
``VmHWM``, reset by writing ``5`` to ``/proc/self/clear_refs``): what decides whether a laptop runs out of memory.
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
