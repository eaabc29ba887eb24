"""A CUDA GPU that is not there: ``torch.cuda``'s answers about a device, patched, so that the
precision rule, the environment report and a chapter's plan can be checked for a T4 (compute
capability 7.5) or an A100 (8.0) on a machine without one. Nothing can run on it."""
from types import SimpleNamespace

GPUS = {"Tesla T4": (7, 5, 15), "NVIDIA A100-SXM4-40GB": (8, 0, 40), "NVIDIA H100 80GB HBM3": (9, 0, 80)}


def patches(name: str) -> dict:
    """``{attribute of torch.cuda: fake}`` for the GPU ``name`` of :data:`GPUS`. Like torch on a
    real T4, ``is_bf16_supported()`` answers True at every capability (emulation included).
    ``torch.cuda.is_available()`` keeps its answer (torch's own code would try the GPU): detrlib asks
    :func:`detrlib.config.has_cuda`, which :func:`install` and the tests patch."""
    major, minor, gib = GPUS[name]
    props = SimpleNamespace(name=name, major=major, minor=minor, total_memory=gib * 2**30, multi_processor_count=40)
    return {"device_count": lambda: 1, "get_device_name": lambda device=None: name,
            "get_device_capability": lambda device=None: (major, minor),
            "get_device_properties": lambda device=None: props, "is_bf16_supported": lambda *a, **k: True}


def install(name: str) -> None:
    """Patch ``torch.cuda`` for good (a kernel's ``sitecustomize``); tests use ``monkeypatch``."""
    import torch

    import detrlib.config

    for attribute, fake in patches(name).items():
        setattr(torch.cuda, attribute, fake)
    detrlib.config.has_cuda = lambda: True
