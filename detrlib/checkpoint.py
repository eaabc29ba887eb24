"""Checkpoints: the official DETR weights into a detrlib model, and training runs that survive a
Colab disconnect.

``load_official_checkpoint`` reads ``detr-r50-e632da11.pth`` (``{"model": state_dict}``) from a path
or URL and fits it to the target model: it replaces the class head when the class count differs
(COCO's 91 + no-object -> VOC's 20 + no-object), keeps the first N query embeddings and the first K
encoder/decoder layers when the target is smaller, and refuses anything else that does not fit,
naming the tensors. The returned :class:`LoadReport` lists every tensor loaded, sliced, dropped or
newly initialized.

A run checkpoint is written to a temporary file and renamed into place, so a run killed mid-write
leaves the previous checkpoint intact. Resuming restores everything a run needs to continue as if it
had never stopped: model, optimizer, scheduler, AMP scaler, every RNG state, epoch, step and the
metrics history. Loading uses ``weights_only=True``: a checkpoint is data, never code.
"""
from __future__ import annotations

import os
import random
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from detrlib.config import workdir

OFFICIAL_R50_URL = "https://dl.fbaipublicfiles.com/detr/detr-r50-e632da11.pth"
_LAYER = re.compile(r"^transformer\.(encoder|decoder)\.layers\.(\d+)\.")
_OFFICIAL_MODULES = ("backbone.0.", "transformer.", "input_proj.", "query_embed.", "bbox_embed.")
_HASH = re.compile(r"-([a-f0-9]{6,})\.")


@dataclass
class LoadReport:
    """What happened to each tensor. ``sliced`` holds ``(name, checkpoint shape, model shape)``;
    ``dropped`` (checkpoint tensors not used) and ``new`` (model tensors left at their fresh
    initialisation) hold ``(name, reason)``."""

    source: str
    loaded: list[str] = field(default_factory=list)
    sliced: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    new: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.source}: {len(self.loaded)} loaded, {len(self.sliced)} sliced, "
                 f"{len(self.dropped)} dropped, {len(self.new)} new"]
        lines += [f"  sliced   {n}  {list(a)} -> {list(b)}{_slice_note(n, a, b)}" for n, a, b in self.sliced]
        for kind, items in (("dropped", self.dropped), ("new", self.new)):
            by_reason: dict[str, list[str]] = {}
            for name, reason in items:
                by_reason.setdefault(reason, []).append(name)
            for reason, names in by_reason.items():
                what = names[0] if len(names) == 1 else f"{len(names)} tensors ({names[0]}, ...)"
                lines.append(f"  {kind:8} {what}: {reason}")
        return "\n".join(lines)


def _slice_note(name: str, before: tuple, after: tuple) -> str:
    if name.startswith("class_embed."):
        return ": the rows of the model's classes, and no-object's"
    if name == "query_embed.weight":
        return f": the first {after[0]} queries kept, queries {after[0]}-{before[0] - 1} dropped"
    return ""


def fetch(url: str) -> Path:
    """Download ``url`` once into ``workdir()/checkpoints``, checking the SHA-256 prefix that its
    file name carries (``detr-r50-e632da11.pth``: the hash starts with ``e632da11``)."""
    name = url.rsplit("/", 1)[-1]
    match = _HASH.search(name)
    if not match:
        raise ValueError(f"{url}: the file name carries no '-<sha256 prefix>.' part, so the download "
                         "cannot be verified; download it yourself and pass the local path")
    path = workdir() / "checkpoints" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(path.suffix + ".part")
        try:
            torch.hub.download_url_to_file(url, str(partial), hash_prefix=match.group(1), progress=False)
        except RuntimeError as err:
            partial.unlink(missing_ok=True)
            raise RuntimeError(f"{url}: the download does not match the hash in its name ({err})") from err
        partial.rename(path)
    return path


def read_state_dict(path_or_url: str | Path) -> tuple[dict, str]:
    """The state_dict of an official-format checkpoint, and a short name for reports."""
    source = str(path_or_url)
    is_url = re.match(r"^(https?|file)://", source) is not None
    path = fetch(source) if is_url else Path(source)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} not found: pass a path or the URL {OFFICIAL_R50_URL}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors come in many types
        raise ValueError(f"{path} is not a weights-only checkpoint ({type(err).__name__}: {err})") from err
    sd = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not sd or not all(torch.is_tensor(v) for v in sd.values()):
        raise ValueError(f"{path} is not in the official format {{'model': state_dict}}")
    return sd, path.name


def load_official_checkpoint(model: nn.Module, path_or_url: str | Path, class_rows=None) -> LoadReport:
    """Load official DETR weights into ``model`` (a :class:`~detrlib.model.DETR`) and report how.

    ``class_rows`` (one checkpoint class index per model class, e.g.
    :data:`detrlib.data.voc.VOC_IN_COCO`) keeps those rows of the class head, and its no-object row,
    instead of replacing the head: the COCO model then detects VOC's classes without training.
    Raises ``ValueError`` naming every tensor that fits no rule (another architecture, another
    width, a bigger target than the checkpoint).
    """
    src, name = read_state_dict(path_or_url)
    if class_rows is None:
        return fit_state_dict(model, src, name)
    rows, heads = list(class_rows) + [-1], ("class_embed.weight", "class_embed.bias")  # no-object is the last logit
    report = fit_state_dict(model, {**src, **{k: src[k][rows] for k in heads}}, name)
    for key in heads:
        report.loaded.remove(key)
        report.sliced.append((key, tuple(src[key].shape), tuple(model.state_dict()[key].shape)))
    return report


def fit_state_dict(model: nn.Module, src: dict, name: str) -> LoadReport:
    """Load the state_dict ``src`` into ``model`` by the rules of :func:`load_official_checkpoint`
    (class head replaced, first N queries and first K layers kept) and report how; ``name`` names
    the source in the report and in errors. Pruning (:mod:`detrlib.prune`) uses it too."""
    target = model.state_dict()
    report = LoadReport(source=name)
    merged, problems = {}, []
    layers = {part: len({m[2] for k in target if (m := _LAYER.match(k)) and m[1] == part})
              for part in ("encoder", "decoder")}

    for key, value in src.items():
        layer = _LAYER.match(key)
        if key in target:
            want = target[key].shape
            if value.shape == want:
                merged[key] = value
                report.loaded.append(key)
            elif key.startswith("class_embed."):
                report.dropped.append((key, f"class head replaced ({value.shape[0]} outputs in the "
                                            f"checkpoint, {want[0]} in the model)"))
            elif key == "query_embed.weight" and value.shape[1:] == want[1:] and value.shape[0] > want[0]:
                merged[key] = value[: want[0]]
                report.sliced.append((key, tuple(value.shape), tuple(want)))
            else:
                problems.append(f"{key}: checkpoint {list(value.shape)}, model {list(want)}")
        elif layer and int(layer[2]) >= layers[layer[1]]:
            report.dropped.append((key, f"{layer[1]} layer {layer[2]} is beyond the model's "
                                        f"{layers[layer[1]]} {layer[1]} layers"))
        elif key.endswith("num_batches_tracked"):
            report.dropped.append((key, "BatchNorm counter, unused by the model's norm layers"))
        else:
            problems.append(f"{key}: in the checkpoint, not in the model")
    for key, value in target.items():
        if key in merged:
            continue
        if key.startswith("class_embed."):
            report.new.append((key, "class head for the model's classes, fresh initialisation"))
        elif key.endswith("num_batches_tracked"):
            report.new.append((key, "BatchNorm counter, starts at zero"))
        elif key.startswith(_OFFICIAL_MODULES):
            problems.append(f"{key}: in the model, not in the checkpoint")
        elif key.startswith("denoiser."):
            report.new.append((key, "denoising queries (chapter 5), not part of DETR: fresh initialisation"))
        else:
            report.new.append((key, "not in the checkpoint (learned positions, ...), fresh initialisation"))
        merged[key] = value
    if problems:
        raise ValueError(f"{name} does not fit this model ({len(problems)} tensors):\n  "
                         + "\n  ".join(problems[:20]) + ("\n  ..." if len(problems) > 20 else ""))
    model.load_state_dict({k: v.to(target[k].dtype) for k, v in merged.items()}, strict=True)
    return report


# --- run checkpoints ---------------------------------------------------------------------------------

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


def atomic_save(state: dict, path: Path) -> Path:
    """``torch.save`` to a temporary file, synced, then renamed: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def save_checkpoint(state: dict, directory: str | Path, step: int, keep_last: int = 2) -> Path:
    """Atomically write ``state`` as ``ckpt-<step>.pt`` and delete all but the newest ``keep_last``.

    Refuses (raises) when the model weights are not finite: a broken checkpoint must never replace
    a good one.
    """
    if not _all_finite(state["model"]):
        raise FloatingPointError(f"refusing to write checkpoint at step {step}: the model has NaN/inf weights")
    path = atomic_save(state, Path(directory) / f"ckpt-{step:08d}.pt")
    for old in list_checkpoints(directory)[:-keep_last] if keep_last > 0 else []:
        old.unlink()
    return path


def save_best(state: dict, directory: str | Path) -> Path:
    """Atomically write the best checkpoint so far as ``best.pt`` (model, config and metrics)."""
    return atomic_save(state, Path(directory) / "best.pt")


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


REFERENCE = {  # profile: (file in checkpoints/, its SHA-256)
    "quick": ("quick-reference.pt", "5b10a012fc03743034b243fb1dcf0a769550f6423b5d368016874bbed296e8df"),
}


def reference_checkpoint(profile: str = "quick") -> Path:
    """The reference checkpoint of a profile: its recipe trained much longer by ``python -m detrlib
    train`` (the command is in ``checkpoints/README.md``), for chapters that show what a trained
    model does. Read from the repository checkout when there, else downloaded from the repository
    and checked against its SHA-256."""
    from detrlib.config import repository_file

    name, sha256 = REFERENCE[profile]
    return repository_file(f"checkpoints/{name}", sha256)


def load_trained(path: str | Path, map_location="cpu"):
    """``(model, config, state)`` from a run checkpoint, ``best.pt``, or a run folder (its ``best.pt``,
    else its newest checkpoint)."""
    from detrlib.config import Config
    from detrlib.model import build_model

    path = Path(path)
    if path.is_dir():
        best = path / "checkpoints" / "best.pt"
        state = load_checkpoint(best, map_location) if best.exists() else load_latest(path / "checkpoints", map_location)
        if state is None:
            raise FileNotFoundError(f"{path} holds no checkpoint (looked in {path / 'checkpoints'}): train first")
    elif path.exists():
        state = load_checkpoint(path, map_location)
    else:
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if "config" not in state:
        raise ValueError(f"{path} is not a detrlib run checkpoint (no 'config'); for the official DETR "
                         "weights use load_official_checkpoint")
    cfg = Config.from_dict(state["config"])
    model = build_model(cfg.model)
    model.load_state_dict(state["model"])
    return model.eval(), cfg, state
