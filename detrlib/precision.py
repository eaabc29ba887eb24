"""Mixed precision, one rule (chapter 7): the autocast dtype a device trains in, and whether it needs a GradScaler.
Training, every benchmark, chapter 7 and the environment report ask :func:`precision`.

bf16 only where the device computes in it natively: CUDA GPUs of compute capability 8.0 and later (A100, L4, H100,
...) and CPUs with bf16 instructions. Older GPUs, the T4 (7.5) among them, train in fp16 with a GradScaler:
``torch.cuda.is_bf16_supported()`` answers True on a T4 as well, but only because torch emulates bf16 there, off
the tensor cores and slower than fp16. A CPU without bf16 instructions stays in fp32, where emulated bf16 would be
slower. ``amp="off"`` is fp32.
"""
from __future__ import annotations

import re
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """What a run on one device computes in: ``dtype`` for autocast (None: fp32), the reason in one line, and a
    ``warning`` when the setting forces a slow path."""

    dtype: torch.dtype | None
    why: str
    warning: str = ""

    @property
    def scaler(self) -> bool:
        """fp16 needs a GradScaler: its range is too narrow for small gradients."""
        return self.dtype == torch.float16

    @property
    def name(self) -> str:
        return {torch.float16: "fp16 + GradScaler", torch.bfloat16: "bf16"}.get(self.dtype, "fp32")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (x86 AVX512-BF16 or AMX, Arm's BF16), as ``/proc/cpuinfo`` says."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16|bf16)\b", flags) is not None


def cuda_has_bf16(device: torch.device) -> bool:
    """Whether a CUDA GPU computes in bf16 natively: compute capability 8.0 (Ampere) or later."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def precision(amp: str, device: torch.device | str) -> Precision:
    """The precision ``TrainConfig.amp`` (``off``, ``auto``, ``bf16``, ``fp16``) trains in on ``device``."""
    device = torch.device(device)
    if amp == "off":
        return Precision(None, "fp32: train.amp=off")
    if device.type == "cuda":
        name, cc = torch.cuda.get_device_name(device), "{}.{}".format(*torch.cuda.get_device_capability(device))
        if cuda_has_bf16(device):
            native = f"{name}: bf16 (compute capability {cc} computes in it natively)"
            return Precision(torch.bfloat16 if amp == "auto" else _DTYPES[amp],
                             native if amp != "fp16" else f"{name}: fp16 + GradScaler (train.amp=fp16)")
        if amp == "bf16":
            return Precision(torch.bfloat16, f"{name}: bf16, emulated (compute capability {cc})",
                             f"warning: train.amp=bf16 on {name} (compute capability {cc}): bf16 is only emulated "
                             "there, slower than fp16; use train.amp=auto (fp16 + GradScaler) or fp16")
        return Precision(torch.float16,
                         f"{name}: fp16 + GradScaler; bf16 only emulated (compute capability {cc}, below 8.0)")
    if device.type == "cpu":
        if amp == "fp16":
            return Precision(torch.float16, "cpu: fp16 + GradScaler (train.amp=fp16), emulated",
                             "warning: train.amp=fp16 on a CPU: fp16 is emulated there, slower than fp32; "
                             "use train.amp=auto (bf16 where the CPU has it, else fp32)")
        if cpu_has_bf16():
            return Precision(torch.bfloat16, "cpu: bf16 (this CPU has bf16 instructions)")
        if amp == "auto":
            return Precision(None, "cpu: fp32; bf16 only emulated (this CPU has no bf16 instructions)")
        return Precision(torch.bfloat16, "cpu: bf16, emulated (no bf16 instructions)",
                         "warning: train.amp=bf16 on a CPU without bf16 instructions: it is emulated, slower "
                         "than fp32; use train.amp=auto (fp32 here)")
    if amp == "auto":
        return Precision(None, f"{device.type}: fp32 (train.amp=auto uses 16 bits on CUDA GPUs and CPUs only)")
    return Precision(_DTYPES[amp], f"{device.type}: {amp} (train.amp={amp})")


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` in ``dtype`` on ``device``'s type; nothing for fp32 (``None``)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
