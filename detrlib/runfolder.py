"""A run folder's files, the rule that a new run never writes over them, and the lock that keeps two
processes from training into one folder at once.

A run writes ``config.json``, ``metrics.jsonl``, ``steps.csv`` and ``checkpoints/*.pt``. A new run
starts only in a folder that holds none of them; ``resume`` continues from the newest readable
checkpoint, and refuses (rather than start over on top of the old files) when there is none. The
one exception: a run stopped before its first checkpoint leaves only its ``config.json`` and an
empty ``metrics.jsonl``, which a resumed run may write again, having nothing to lose.
"""
from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows has no flock: no guard against a second process there
    fcntl = None

LOCK_FILE = "train.lock"
_RUN_FILES = ("config.json", "metrics.jsonl", "steps.csv")


class RunFolderError(RuntimeError):
    """Training into this folder would write over a run, or another process trains there."""


def run_files(out: str | Path) -> list[str]:
    """The run files in ``out``, relative to it."""
    out = Path(out)
    found = [name for name in _RUN_FILES if (out / name).exists()]
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
    """Refuse a run in ``out`` that would write over another run's files: any run file without
    ``resume``; with it, results but no checkpoint to continue from."""
    out = Path(out)
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


@contextmanager
def locked(out: str | Path):
    """Hold the run folder ``out`` (created if needed) for this process: another process that asks
    for it meanwhile gets a :class:`RunFolderError`. The lock is ``flock`` on ``out/train.lock``,
    which the operating system releases when the process ends, however it ends."""
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
            f.truncate(0)
            f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            f.flush()
        try:
            yield
        finally:
            if held:
                fcntl.flock(f, fcntl.LOCK_UN)
