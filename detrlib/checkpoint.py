"""Checkpoints that survive a Colab disconnect.

A checkpoint is written to a temporary file and renamed into place, so a run killed mid-write leaves
the previous checkpoint intact. Resuming restores everything a run needs to continue as if it had
never stopped: model, optimizer, scheduler, AMP scaler, every RNG state, epoch, step and the metrics
history. Loading uses ``weights_only=True``: a checkpoint is data, never code.
"""
from __future__ import annotations

import os
import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch

_NAME = re.compile(r"^ckpt-(\d{8})\.pt$")


def rng_state() -> dict:
    """Every random number generator a training step touches, as plain tensors and lists."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(mt), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _all_finite(state_dict: dict) -> bool:
    return all(torch.isfinite(t).all() for t in state_dict.values() if t.is_floating_point())


def save_checkpoint(state: dict, directory: str | Path, step: int, keep_last: int = 2) -> Path:
    """Atomically write ``state`` as ``ckpt-<step>.pt`` and delete all but the newest ``keep_last``.

    Refuses (raises) when the model weights are not finite: a broken checkpoint must never replace
    a good one.
    """
    if not _all_finite(state["model"]):
        raise FloatingPointError(f"refusing to write checkpoint at step {step}: the model has NaN/inf weights")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"ckpt-{step:08d}.pt"
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    for old in list_checkpoints(directory)[:-keep_last] if keep_last > 0 else []:
        old.unlink()
    return path


def save_best(state: dict, directory: str | Path) -> Path:
    """Atomically write the best checkpoint so far as ``best.pt`` (the model and its metrics only)."""
    path = Path(directory) / "best.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Resumable checkpoints in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)


def load_latest(directory: str | Path, map_location="cpu") -> dict | None:
    """The newest checkpoint that loads, falling back (with a warning) past corrupt ones; None if none."""
    for path in reversed(list_checkpoints(directory)):
        try:
            state = load_checkpoint(path, map_location)
        except Exception as err:  # a truncated or corrupt file: try the one before
            warnings.warn(f"checkpoint {path} is unreadable ({type(err).__name__}: {err}); "
                          "falling back to the previous one", stacklevel=2)
            continue
        state["path"] = str(path)
        return state
    return None
