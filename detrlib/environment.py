"""The machine a chapter or a measurement runs on, as the top of every chapter and every results file reports it."""
from __future__ import annotations

import os
from pathlib import Path

from detrlib import config
from detrlib.config import Config


def machine() -> dict:
    """This machine as every measurement records it: CPU, cores, torch's threads, platform, versions, GPU if any."""
    import platform

    import torch
    import torchvision

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "torchvision": torchvision.__version__}
    if config.has_cuda():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def environment_report(cfg: Config | None = None) -> str:
    """Device, the precision a run trains in there (``cfg``'s ``train.amp``, else ``auto``), library
    versions and the chosen profile, for the top of every chapter."""
    import torch

    from detrlib import __version__
    from detrlib.precision import precision

    info, device = machine(), config.pick_device()
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        where = (f"cuda: {props.name}, {props.total_memory / 2**30:.0f} GiB, "
                 f"compute capability {props.major}.{props.minor}")
    else:
        where = f"cpu: {info['cpu']}, {info['torch_threads']} threads"
    amp = cfg.train.amp if cfg is not None else "auto"
    lines = [f"device       {where}", f"precision    {precision(amp, device).why}", f"python       {info['python']}",
             f"torch        {info['torch']}", f"torchvision  {info['torchvision']}", f"detrlib      {__version__}"]
    if cfg is not None:
        lines.append(f"settings     {cfg.describe()}")
    return "\n".join(lines)
