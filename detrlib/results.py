"""The measurements the repository keeps in ``results/`` (chapter 8's ablation, ``bench gpu``'s
tables), wherever detrlib runs: read from the checkout, or, from an installed package (Colab),
fetched from the repository, each file checked against the sha256 that ``results/index.json``
lists. ``make sync``, ``bench gpu --out`` and ``ablate --out`` keep the index up to date."""
from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
from pathlib import Path

INDEX = "index.json"


def checkout_dir() -> Path | None:
    """The checkout's ``results/`` folder, or None when detrlib is installed without one."""
    folder = Path(__file__).resolve().parents[1] / "results"
    return folder if folder.is_dir() else None


def write_index(folder: str | Path) -> Path:
    """Write ``folder/index.json``: every result file's name and sha256."""
    from detrlib.checkpoint import atomic_write_text

    folder = Path(folder)
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(folder.glob("*.json")) if p.name != INDEX}
    return atomic_write_text(folder / INDEX, json.dumps({"files": files}, indent=1) + "\n")


def refresh_index(written: str | Path) -> None:
    """After writing a result file: update the index of its folder, if that folder keeps one."""
    folder = Path(written).parent
    if (folder / INDEX).exists():
        write_index(folder)


@functools.cache
def _remote_index() -> tuple[dict, str]:
    """The repository's index (fetched once per process; the last copy fetched when offline), and
    ``""`` or why there is none."""
    from detrlib.config import repository_url, workdir
    from detrlib.data.download import DownloadError, download

    cached = workdir() / "results" / INDEX
    fresh = cached.with_name(INDEX + ".new")
    fresh.unlink(missing_ok=True)
    try:
        download([repository_url(f"results/{INDEX}")], fresh, "", "sha256", timeout=10).replace(cached)
    except (DownloadError, OSError) as err:
        if not cached.exists():
            reason = str(err).splitlines()[1 if "\n" in str(err) else 0].strip()
            return {}, f"the repository could not be reached ({reason})"
    try:
        return json.loads(cached.read_text())["files"], ""
    except (ValueError, KeyError, TypeError):
        return {}, f"the repository's results/{INDEX} could not be read"


def find(pattern: str) -> tuple[list[Path], str]:
    """The result files whose names match ``pattern`` (``"gpu-*.json"``), from the checkout or
    fetched from the repository, and ``""`` or one line on why none could be fetched."""
    from detrlib.data.download import DownloadError, repository_file

    local = checkout_dir()
    if local is not None:
        return sorted(local.glob(pattern)), ""
    index, why = _remote_index()
    paths = []
    for name, digest in sorted(index.items()):
        if fnmatch.fnmatch(name, pattern):
            try:
                paths.append(repository_file(f"results/{name}", digest))
            except (DownloadError, OSError) as err:
                why = f"results/{name} could not be fetched ({str(err).splitlines()[0]})"
    return paths, why


def where() -> str:
    """Where the results come from, in a few words, for a page or a message."""
    if checkout_dir() is not None:
        return "the repository's results/ folder"
    from detrlib.config import REPOSITORY

    return f"{REPOSITORY}'s results/"
