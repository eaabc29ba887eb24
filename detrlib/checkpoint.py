"""Checkpoints: the official DETR weights into a detrlib model (:func:`load_official_checkpoint`), and training runs
that survive a Colab disconnect: a run checkpoint (a :class:`~detrlib.train_state.TrainState`) is written to a
temporary file and renamed into place, so a run killed mid-write leaves the previous one intact. Loading uses
``weights_only=True``: a checkpoint is data, never code.
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from detrlib.config import downloads_dir
from detrlib.errors import CheckpointError, DivergedError, MissingFileError, StorageError

OFFICIAL_R50_URL = "https://dl.fbaipublicfiles.com/detr/detr-r50-e632da11.pth"
_LAYER = re.compile(r"^transformer\.(encoder|decoder)\.layers\.(\d+)\.")
_OFFICIAL_MODULES = ("backbone.0.", "transformer.", "input_proj.", "query_embed.", "bbox_embed.")
_HASH = re.compile(r"-([a-f0-9]{6,})\.")


@dataclass
class LoadReport:
    """What happened to each tensor. ``sliced`` holds ``(name, checkpoint shape, model shape)``; ``dropped``
    (checkpoint tensors not used) and ``new`` (model tensors left freshly initialised) hold ``(name, reason)``."""

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
    """Download ``url`` once into ``downloads_dir()/checkpoints`` (on Google Drive when mounted), checking the SHA-256
    prefix its file name carries (``detr-r50-e632da11.pth``: ``e632da11``)."""
    from detrlib.data.download import download

    name = url.rsplit("/", 1)[-1]
    match = _HASH.search(name)
    if not match:
        raise ValueError(f"{url}: the file name carries no '-<sha256 prefix>.' part, so the download "
                         "cannot be verified; download it yourself and pass the local path")
    return download([url], downloads_dir() / "checkpoints" / name, match.group(1), "sha256")


def read_state_dict(path_or_url: str | Path) -> tuple[dict, str]:
    """The state_dict of an official-format checkpoint, and a short name for reports."""
    source = str(path_or_url)
    path = fetch(source) if re.match(r"^(https?|file)://", source) else Path(source)
    if not path.exists():
        raise MissingFileError(f"checkpoint {path} not found: pass a path or the URL {OFFICIAL_R50_URL}")
    obj = load_checkpoint(path)
    sd = obj.get("model", obj) if isinstance(obj, dict) else None
    if not _is_state_dict(sd):
        raise ValueError(f"{path} is not in the official format {{'model': state_dict}}")
    return sd, path.name


def load_official_checkpoint(model: nn.Module, path_or_url: str | Path, class_rows=None) -> LoadReport:
    """Load official DETR weights (``detr-r50-e632da11.pth``: ``{"model": state_dict}``, a path or URL) into ``model``
    (a :class:`~detrlib.model.DETR`); the :class:`LoadReport` lists every tensor loaded, sliced, dropped or new.

    The class head is replaced when the class count differs (COCO's 91 + no-object -> VOC's 20 + no-object), the
    first N query embeddings and the first K encoder/decoder layers are kept when the model is smaller, and a
    ``ValueError`` names every tensor that fits no rule (another architecture, another width, a bigger target than
    the checkpoint). ``class_rows`` (one checkpoint class index per model class, e.g.
    :data:`detrlib.data.voc.VOC_IN_COCO`) keeps those rows of the class head, and its no-object row, instead of
    replacing it: the COCO model then detects VOC's classes without training.
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
    """Load the state_dict ``src`` into ``model`` by :func:`load_official_checkpoint`'s rules (class head replaced,
    first N queries and K layers kept) and report how; ``name`` names the source. :mod:`detrlib.prune` uses it too."""
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


def atomic_save(state: dict, path: Path) -> Path:
    """``torch.save`` to a temporary file, synced, then renamed: a crash never leaves half a file."""
    return atomic_write(path, lambda f: torch.save(state, f))


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` as :func:`atomic_save` writes a checkpoint."""
    return atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write(path: Path, write) -> Path:
    """Call ``write(file)`` on ``<path>.tmp`` (never taken for a checkpoint), sync it and rename it to ``path``; on a
    failure (a read-only folder, a full disk) remove the ``.tmp`` file and raise an ``OSError`` naming ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch.save reports a failed write as a RuntimeError
        tmp.unlink(missing_ok=True)
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).splitlines()[0]
        raise StorageError(getattr(err, "errno", None), f"cannot write {path}: {reason}; free some space, or "
                           "choose a folder you can write to") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(state: dict, directory: str | Path, step: int, keep_last: int = 2) -> Path:
    """Atomically write ``state`` as ``ckpt-<step>.pt`` and delete all but the newest ``keep_last``. Refuses model
    weights that are not finite: a broken checkpoint must never replace a good one."""
    if not all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point()):
        raise DivergedError(f"refusing to write checkpoint at step {step}: the model has NaN/inf weights")
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
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name)) if directory.is_dir() else []


_MAGIC = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"\x93NUMPY": "a NumPy array file",
          b"\x1f\x8b": "a gzip archive", b"{": "a JSON or text file", b"<": "an HTML or XML file"}


def load_checkpoint(path: str | Path, map_location="cpu"):
    """What ``torch.save`` wrote to ``path``, as data only (``weights_only=True``); a :class:`CheckpointError` names
    the file and what is wrong: empty, cut short or damaged, not a PyTorch file, or holding objects beyond data."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise CheckpointError(f"{path} is empty (0 bytes), not a checkpoint: its writing was interrupted")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's warnings about unusual pickles: the error says it all
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch reports damage in several exception types
        raise CheckpointError(f"{path} {_not_a_checkpoint(head, err)}") from None


def _not_a_checkpoint(head: bytes, err: Exception) -> str:
    """What a file that ``torch.load(weights_only=True)`` refused is, from its first bytes and the error."""
    text = str(err)
    code = re.search(r"GLOBAL ([\w.]+)", text)
    if code:
        return (f"holds Python objects beyond tensors ({code[1]}), which could run code: detrlib reads "
                "checkpoints as data only and refuses it; it is not a detrlib or DETR checkpoint")
    if head.startswith(b"PK\x03\x04"):  # torch.save's zip archive
        if "subdirectory" in text or "data.pkl" in text:
            return "is a zip archive, but not one torch.save wrote: it is not a checkpoint"
        return "is a PyTorch checkpoint that is damaged or cut short (an interrupted write or copy)"
    if head.startswith(b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"):  # torch.save's older format (its magic number)
        return "is a PyTorch checkpoint (older format) that is damaged or cut short (an interrupted write or copy)"
    if head.startswith(b"\x80"):
        return "is a Python pickle, not a file torch.save wrote: it is not a checkpoint"
    kind = next((name for magic, name in _MAGIC.items() if head.startswith(magic)), "")
    if not kind and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        kind = "a text file"
    return f"is {kind}, not a checkpoint" if kind else "is not a file PyTorch wrote (random bytes?): it is not a checkpoint"


def load_latest(directory: str | Path, map_location="cpu") -> dict | None:
    """The newest checkpoint that loads, falling back (with a warning) past damaged ones; None if none."""
    for path in reversed(list_checkpoints(directory)):
        try:
            state = load_checkpoint(path, map_location)
            if not isinstance(state, dict) or "model" not in state:
                raise CheckpointError(f"{path} is not a detrlib run checkpoint")
        except CheckpointError as err:  # a truncated or damaged file: try the one before
            warnings.warn(f"{err}; falling back to the checkpoint before it", stacklevel=2)
            continue
        state["path"] = str(path)
        return state
    return None


REFERENCE = {  # profile: (file in checkpoints/, its SHA-256)
    "quick": ("quick-reference.pt", "5b10a012fc03743034b243fb1dcf0a769550f6423b5d368016874bbed296e8df"),
}


def reference_checkpoint(profile: str = "quick") -> Path:
    """A profile's recipe trained much longer (``checkpoints/README.md``), for chapters that show a trained model:
    read from the repository checkout when there, else downloaded from the repository and checked (SHA-256)."""
    from detrlib.data.download import repository_file

    name, sha256 = REFERENCE[profile]
    return repository_file(f"checkpoints/{name}", sha256)


def load_trained(path: str | Path, map_location="cpu"):
    """``(model, config, state)`` from a run checkpoint, ``best.pt``, or a run folder (its ``best.pt``, else, with a
    warning when ``best.pt`` is damaged, its newest readable checkpoint). The stored config is checked, and the
    weights' shapes against it, before the model is built."""
    from detrlib.config import Config, ConfigError
    from detrlib.model import build_model

    path = Path(path)
    if path.is_dir():
        state, path = _trained_state(path, map_location)
    elif path.exists():
        try:
            state = load_checkpoint(path, map_location)
        except CheckpointError as err:
            raise CheckpointError(f"{err}; pass another checkpoint, or a run folder to use its newest readable "
                                  "one") from None
    else:
        raise MissingFileError(f"checkpoint {path} does not exist")
    if not isinstance(state, dict) or "config" not in state or not _is_state_dict(state.get("model")):
        official = isinstance(state, dict) and _is_state_dict(state.get("model"))
        raise CheckpointError(
            f"{path} is official-format DETR weights, not a detrlib run checkpoint: start training from it "
            f"with --init-checkpoint {path}" if official else
            f"{path} is a PyTorch file but not a detrlib checkpoint (it has no model weights and config): "
            "pass a checkpoint that detrlib's train or prune wrote, or a run folder")
    try:
        cfg = Config.from_dict(state["config"])
    except ConfigError as err:
        raise CheckpointError(f"{path}: its stored config is not valid ({err}): the file is damaged, or from "
                              "another program or detrlib version") from None
    _check_shapes(path, cfg.model, state["model"])
    names = state.get("classes")
    if names is not None and (not isinstance(names, (list, tuple)) or len(names) != cfg.model.num_classes
                              or not all(isinstance(n, str) for n in names)):
        what = f"{len(names)} class names" if isinstance(names, (list, tuple)) else f"classes of type {type(names).__name__}"
        raise CheckpointError(f"{path}: it holds {what} but its class head has {cfg.model.num_classes} classes: the "
                              "file is damaged or from another program")
    model = build_model(cfg.model)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: its weights do not fit the model its config describes "
                              f"({str(err).splitlines()[1].strip()}): the file is damaged or from another program") from None
    return model.eval(), cfg, state


def _trained_state(folder: Path, map_location) -> tuple[dict, Path]:
    """The checkpoint of a run folder to evaluate: ``best.pt``, else the newest readable one."""
    best, problem = folder / "checkpoints" / "best.pt", ""
    if best.exists():
        try:
            return load_checkpoint(best, map_location), best
        except CheckpointError as err:
            problem = str(err)
    state = load_latest(folder / "checkpoints", map_location)
    if state is None:
        raise MissingFileError(f"{folder} holds no readable checkpoint (looked in {folder / 'checkpoints'}): "
                                "train first, or pass another run folder")
    if problem:
        warnings.warn(f"{problem}; using the newest readable checkpoint, {state['path']}", stacklevel=3)
    return state, Path(state["path"])


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(torch.is_tensor(v) for v in obj.values())


def _check_shapes(path: Path, m, state_dict: dict) -> None:
    """Refuse weights whose shapes disagree with the config, before building a model from it: a consistent config
    cannot ask for much more memory than the file's own tensors hold."""
    logits = m.num_classes + (m.class_head == "softmax")  # a softmax head has the no-object logit too
    expected = {"query_embed.weight": (m.num_queries, m.hidden_dim), "class_embed.weight": (logits, m.hidden_dim),
                f"transformer.decoder.layers.{m.dec_layers - 1}.linear1.weight": (m.dim_feedforward, m.hidden_dim)}
    if m.enc_layers:
        expected[f"transformer.encoder.layers.{m.enc_layers - 1}.linear1.weight"] = (m.dim_feedforward, m.hidden_dim)
    for key, shape in expected.items():
        have = tuple(state_dict[key].shape) if key in state_dict else None
        if have != shape:
            raise CheckpointError(f"{path}: its weights do not match its stored config ({key} is "
                                  f"{list(have) if have else 'missing'}, the config asks for {list(shape)}): "
                                  "the file is damaged or from another program")
