"""A run folder: its files, the rule that a new run never writes over them, and the lock that keeps two processes
from training into one folder at once.

A run writes ``config.json``, ``metrics.jsonl`` (one JSON object per evaluation), ``steps.csv`` (loss, learning rate
and seconds of every optimizer step) and ``checkpoints/*.pt``. A new run starts only in a folder that holds none of
them; ``resume`` continues from the newest readable checkpoint, and refuses (rather than start over on top of the
old files) when there is none, except after a run stopped before its first checkpoint: its ``config.json`` and
empty ``metrics.jsonl`` have nothing to lose. A run is known by what its files say, not by their names: its
``config.json`` carries detrlib's marker, and a ``config.json`` or ``train.lock`` that detrlib did not write is
never written over.
"""
from __future__ import annotations

import json
import math
import os
import re
import socket
from contextlib import contextmanager
from pathlib import Path

from detrlib import checkpoint as ckpt
from detrlib.config import PLACEMENT, SECTIONS, Config, ConfigError, runs_dir
from detrlib.errors import RunFolderError

try:
    import fcntl
except ImportError:  # Windows has no flock: no guard against a second process there
    fcntl = None

LOCK_FILE = "train.lock"
_LOCK_TEXT = re.compile(r"pid \d+ on \S*")  # what the lock file holds while a run trains
MARKER = ("written_by", "detrlib")  # the key and value that make a config.json a run's
_RUN_FILES = ("config.json", "metrics.jsonl", "steps.csv")
STEP_COLUMNS = ("step", "loss", "lr", "seconds")


def run_dir(cfg: Config, name: str = "") -> Path:
    """The folder of a run: one per configuration, so the same settings reuse the same run."""
    return runs_dir() / f"{name or cfg.profile}-{cfg.key()}"


def to_json(obj) -> str:
    """Strict JSON (what ``jq`` and other languages read): NaN (the AP of a class with no objects) becomes null."""
    def clean(v):
        if isinstance(v, (dict, list, tuple)):
            return {k: clean(x) for k, x in v.items()} if isinstance(v, dict) else [clean(x) for x in v]
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return json.dumps(clean(obj), allow_nan=False)


def write_config(out: Path, cfg: Config) -> None:
    ckpt.atomic_write_text(out / "config.json", json.dumps({MARKER[0]: MARKER[1], **cfg.to_dict()}, indent=2))


def read_config(out: str | Path) -> Config:
    """The configuration of the run in folder ``out``, from its ``config.json``."""
    settings = json.loads((Path(out) / "config.json").read_text())
    settings.pop(MARKER[0], None)
    return Config.from_dict(settings)


def is_run_config(path: str | Path) -> bool:
    """Whether ``path`` is a detrlib run's ``config.json``: it carries detrlib's marker or, written before there was
    one, holds a whole valid config and nothing else."""
    try:
        settings = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(settings, dict):
        return False
    if settings.get(MARKER[0]) == MARKER[1]:
        return True
    try:
        return set(settings) == {"profile", *SECTIONS} and bool(Config.from_dict(settings))
    except ConfigError:
        return False


def read_metrics(out: str | Path) -> list[dict]:
    path = Path(out) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def write_metrics(out: Path, history: list[dict]) -> None:
    ckpt.atomic_write_text(out / "metrics.jsonl", "".join(to_json(h) + "\n" for h in history))


def read_steps(out: str | Path) -> dict[str, list[float]]:
    """A run's ``steps.csv`` as columns: ``step``, ``loss``, ``lr`` and ``seconds`` per optimizer step."""
    path = Path(out) / "steps.csv"
    rows = [line.split(",") for line in path.read_text().splitlines()[1:]] if path.exists() else []
    return {name: [float(r[i]) for r in rows] for i, name in enumerate(STEP_COLUMNS)}


def write_steps(out: Path, steps: list[list[float]]) -> None:
    lines = [",".join(STEP_COLUMNS)] + [f"{int(s)},{loss:.6g},{lr:.6g},{sec:.6g}" for s, loss, lr, sec in steps]
    ckpt.atomic_write_text(out / "steps.csv", "\n".join(lines) + "\n")


def run_files(out: str | Path) -> list[str]:
    """The run files in ``out``, relative to it."""
    out = Path(out)
    found = [name for name in _RUN_FILES if (out / name).exists()
             and (name != "config.json" or is_run_config(out / name))]
    if (out / "checkpoints").is_dir():
        found += sorted(f"checkpoints/{p.name}" for p in (out / "checkpoints").iterdir() if p.suffix == ".pt")
    return found


def _listed(files: list[str]) -> str:
    return ", ".join(files[:4]) + (f" and {len(files) - 4} more" if len(files) > 4 else "")


def _started_only(out: Path, files: list[str]) -> bool:
    """Whether ``out`` holds only what a run writes before its first checkpoint."""
    metrics = out / "metrics.jsonl"
    return set(files) <= {"config.json", "metrics.jsonl"} and (not metrics.exists() or not metrics.read_text().strip())


def check_new_run(out: str | Path, resume: bool) -> None:
    """Refuse a run in ``out`` that would write over another run's files: any run file without ``resume``; with it,
    results but no checkpoint to continue from."""
    out = Path(out)
    if (out / "config.json").exists() and not is_run_config(out / "config.json"):
        raise RunFolderError(f"{out / 'config.json'} is not a detrlib run's config (it lacks detrlib's marker) and a "
                             "run writes its own config.json there: nothing was changed; choose another --out, or "
                             "move the file away")
    files = run_files(out)
    if not files:
        return
    if not resume:
        raise RunFolderError(f"{out} already holds a run ({_listed(files)}): pass --resume to continue it, "
                             "or choose another --out (in Python: train(..., resume=True), or another folder)")
    if not any(f.startswith("checkpoints/ckpt-") for f in files) and not _started_only(out, files):
        raise RunFolderError(f"{out} holds a run ({_listed(files)}) but no checkpoint to resume from: "
                             "nothing was changed; choose another --out to start a new run")


def check_resumable(out: str | Path) -> None:
    """After no checkpoint of ``out`` could be read: refuse to start over on top of them."""
    out = Path(out)
    damaged = [f for f in run_files(out) if f.startswith("checkpoints/ckpt-")]
    if damaged:
        raise RunFolderError(f"none of the checkpoints of {out} can be read ({_listed(damaged)}; see the warnings "
                             "above): nothing was changed; move them away to start over, or choose another --out")


# what a resumed run may change: its budget, its learning rates (given to the restored optimizer and schedule),
# where its data lies, and bookkeeping; nothing that changes a tensor's shape, the batches or what is learned
RESUME_MAY_CHANGE = PLACEMENT | {
    "profile", "data.root", "train.epochs", "train.max_steps",
    "train.lr", "train.lr_backbone", "train.weight_decay", "train.lr_schedule", "train.lr_drop", "train.warmup_steps",
    "train.init_checkpoint",
}


def _flat(cfg: Config) -> dict:
    """Every setting of ``cfg`` by its dotted name (``model.num_queries``)."""
    settings = cfg.to_dict()
    return {"profile": settings.pop("profile"),
            **{f"{section}.{k}": v for section, values in settings.items() for k, v in values.items()}}


def check_resume(out: str | Path, saved: dict, cfg: Config) -> None:
    """Refuse to continue the run in ``out``, whose newest checkpoint is ``saved``, with a ``cfg`` that changes a
    setting outside :data:`RESUME_MAY_CHANGE` (the model's shape, the data, the batch, the loss, ...), naming them."""
    try:
        began = Config.from_dict(saved.get("config"))
    except ConfigError as err:
        raise RunFolderError(f"{saved.get('path', out)} holds no valid detrlib config ({err}), so the run cannot be "
                             "continued: move it away to start over, or choose another --out") from None
    before, now = _flat(began), _flat(cfg)
    changed = [f"{k} (the run: {before[k]!r}, this command: {now[k]!r})" for k in now
               if k not in RESUME_MAY_CHANGE and before[k] != now[k]]
    if changed:
        raise RunFolderError(f"{out} was trained with other settings than this command's: {_listed(changed)}; a "
                             "resumed run keeps them, except its budget, learning rates and bookkeeping: resume with "
                             "the run's values (its config.json lists them), or choose another --out for a new run")


@contextmanager
def locked(out: str | Path):
    """Hold the run folder ``out`` (created if needed): another process asking for it meanwhile gets a
    :class:`RunFolderError`. The lock is ``flock`` on ``out/train.lock``; the OS frees it however the process ends."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    with open(out / LOCK_FILE, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise RunFolderError(f"{out} is in use by another training process ({holder}): wait for it to end, "
                                 "or choose another --out") from None
        except OSError:  # a file system without locks (some network mounts): train without one
            held = False
        if held:
            f.seek(0)
            text = f.read().strip()
            if text and not _LOCK_TEXT.fullmatch(text):
                fcntl.flock(f, fcntl.LOCK_UN)
                raise RunFolderError(f"{out / LOCK_FILE} is not detrlib's lock file, and a run keeps its lock there: "
                                     "nothing was changed; choose another --out, or move the file away")
            f.truncate(0)
            f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            f.flush()
        try:
            yield
        finally:
            if held:
                fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def claimed(out: Path, resume: bool, hold: bool = True):
    """Train into ``out`` holding it (:func:`locked`, then :func:`check_new_run`); with ``hold`` False (the other
    processes of a DDP run: process 0 writes the folder) just train."""
    if not hold:
        yield
        return
    check_new_run(out, resume)  # before the lock file is made: a refused folder is left as it was
    with locked(out):
        check_new_run(out, resume)  # again, holding it: another process may have started a run meanwhile
        yield
