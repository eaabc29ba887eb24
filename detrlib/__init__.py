"""detrlib: DETR from the ground up, the library behind the DETR book.

Two floors. The detector: ``config``, ``data``, ``model``, ``targets``, ``matcher``, ``criterion``, ``engine``,
``train_state``, ``runfolder``, ``checkpoint``, ``evaluate``, ``prune``, ``precision``, ``memory``, ``instability``,
``errors`` (and ``cli``, the command line over both). Above it, the book's helpers: ``budget``, ``viz``,
``widgets``, ``ablation``, ``bench``, ``colab``, ``environment``, ``results``; they may import the detector, never
the reverse (tests/test_imports.py checks it).
"""
import importlib

__version__ = "0.1.0"

_EXPORTS = {  # name -> module; imported on first use, so that ``python -m detrlib --help`` needs no torch
    "Config": "detrlib.config", "DataConfig": "detrlib.config", "ModelConfig": "detrlib.config",
    "TrainConfig": "detrlib.config", "get_profile": "detrlib.config", "DETR": "detrlib.model",
    "PostProcess": "detrlib.model", "build_model": "detrlib.model", "count_parameters": "detrlib.model",
    "HungarianMatcher": "detrlib.matcher", "SetCriterion": "detrlib.criterion", "build_criterion": "detrlib.criterion",
    "load_official_checkpoint": "detrlib.checkpoint",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'detrlib' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
