"""Downloads: every file detrlib fetches comes through :func:`download`, with a digest check, resume and mirrors.

That is PASCAL VOC's archives, the official COCO checkpoint and the repository's reference files. Mirrors are tried
in order. A partial download (``<file>.part``) is resumed with an HTTP ``Range`` request where the server allows it,
else restarted; a file whose digest differs is deleted and the next mirror tried. VOC's archives are kept in
``download_dir`` (default :func:`~detrlib.config.downloads_dir`: on Google Drive when it is mounted, so that a new
Colab session extracts them again instead of downloading them) and extracted into ``root``.
"""
from __future__ import annotations

import hashlib
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from detrlib.config import downloads_dir, repository_url, workdir
from detrlib.errors import DataError, DownloadError


@dataclass(frozen=True)
class Archive:
    filename: str
    md5: str
    mirrors: tuple[str, ...]
    sets: tuple[str, ...]  # the "YEAR:split" sets it holds


def _mirrors(path: str, filename: str) -> tuple[str, ...]:
    old = f"http://host.robots.ox.ac.uk/pascal/VOC/{path}/{filename}"
    return (
        f"https://thor.robots.ox.ac.uk/pascal/VOC/{path}/{filename}",  # the official host
        old,  # its old name
        # the Internet Archive's copy, served as stored (id_); the YOLO authors' (pjreddie.com) no longer answers
        f"https://web.archive.org/web/2023id_/{old}",
    )


VOC_ARCHIVES = {
    "VOC2007-trainval": Archive("VOCtrainval_06-Nov-2007.tar", "c52e279531787c972589f7e41ab4ae64",
                                _mirrors("voc2007", "VOCtrainval_06-Nov-2007.tar"),
                                ("VOC2007:train", "VOC2007:val", "VOC2007:trainval")),
    "VOC2007-test": Archive("VOCtest_06-Nov-2007.tar", "b6e924de25625d8de591ea690078ad9f",
                            _mirrors("voc2007", "VOCtest_06-Nov-2007.tar"), ("VOC2007:test",)),
    "VOC2012-trainval": Archive("VOCtrainval_11-May-2012.tar", "6cd6e144f989b92b3379bac3b3de84fd",
                                _mirrors("voc2012", "VOCtrainval_11-May-2012.tar"),
                                ("VOC2012:train", "VOC2012:val", "VOC2012:trainval")),
}


def _unwritable(folder: Path, err: OSError) -> DownloadError:
    return DownloadError(f"cannot write to {folder} ({err.strerror or err}): free space there or make it "
                         "writable, or point DETRLIB_DOWNLOADS at another folder")


def file_digest(path: Path, algorithm: str = "md5", chunk: int = 1 << 20) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, part: Path, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (or start it over when the server ignores Range)."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if offset and response.status != 206:
            print(f"{url} cannot resume a download: starting {part.name[:-5]} over")
            offset = 0
        elif offset:
            size = f"{offset / 2**20:.1f} MiB" if offset >= 2**20 else f"{offset / 2**10:.1f} KiB"
            print(f"resuming {part.name[:-5]}: {size} came in an earlier, interrupted download")
        size = response.headers.get("Content-Length")
        total = offset + int(size) if size else None
        with tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                  desc=part.name[:-5]) as bar:
            try:
                f = open(part, "ab" if offset else "wb")
            except OSError as err:
                raise _unwritable(part.parent, err) from None
            with f:
                while block := response.read(1 << 20):
                    try:
                        f.write(block)
                        f.flush()
                    except OSError as err:  # a full or read-only disk, e.g. a full Google Drive
                        raise _unwritable(part.parent, err) from None
                    bar.update(len(block))


def download(urls, dest: Path, digest: str, algorithm: str = "md5", advice: str = "", timeout: float = 60) -> Path:
    """``dest``, downloaded from the first of ``urls`` that delivers a file whose ``algorithm`` digest starts with
    ``digest`` (a whole digest, or the prefix a file name carries; empty: any file). A ``dest`` already there is
    kept when its digest agrees, else deleted as damaged. ``advice`` ends the error raised when every mirror fails."""
    dest = Path(dest)
    if dest.exists():
        if file_digest(dest, algorithm).startswith(digest):
            return dest
        dest.unlink()
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _unwritable(dest.parent, err) from None
    part = dest.with_name(dest.name + ".part")
    errors = []
    for url in urls:
        try:
            _fetch(url, part, timeout)
        except urllib.error.HTTPError as e:
            if e.code != 416:  # 416: nothing left to send, the part may be complete
                errors.append(f"{url}: HTTP {e.code} {e.reason}")
                continue
        except (urllib.error.URLError, OSError) as e:
            errors.append(f"{url}: {getattr(e, 'reason', e)}")
            continue
        if file_digest(part, algorithm).startswith(digest):
            part.replace(dest)
            return dest
        errors.append(f"{url}: {algorithm} mismatch (the file is damaged or not the expected one)")
        part.unlink()
    raise DownloadError(
        f"could not download {dest.name} from any mirror:\n  " + "\n  ".join(errors)
        + f"\nWhat to do: check the network, or fetch {dest.name} ({algorithm} {digest or 'any'}) by any means, "
        f"put it at {dest} and run again{advice}.")


def extract(archive: Path, root: Path) -> None:
    """Unpack a tar archive into ``root`` (VOC's archives hold ``VOCdevkit/<year>/...``)."""
    if not hasattr(tarfile, "data_filter"):
        raise DownloadError("extracting archives safely needs Python 3.10.12+, 3.11.4+ or 3.12+: upgrade Python")
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        for member in tqdm(tar.getmembers(), desc=f"extracting {archive.name}", unit="file", mininterval=1):
            tar.extract(member, root, filter="data")  # refuses absolute paths and ../ escapes


def archives_for(sets) -> list[str]:
    """Names of the archives holding these ``"YEAR:split"`` sets."""
    names = []
    for spec in sets:
        found = [name for name, a in VOC_ARCHIVES.items() if spec in a.sets]
        if not found:
            known = sorted(s for a in VOC_ARCHIVES.values() for s in a.sets)
            raise DataError(f"no VOC archive holds {spec!r}; downloadable sets: {', '.join(known)}")
        names += [n for n in found if n not in names]
    return names


def download_voc(root, names=tuple(VOC_ARCHIVES), download_dir=None, archives=VOC_ARCHIVES) -> Path:
    """Download (once) and extract (once) the named VOC archives into ``root``; returns ``root``."""
    root = Path(root).expanduser()
    download_dir = Path(download_dir) if download_dir else downloads_dir()
    for name in names:
        archive = archives[name]
        done = root / "VOCdevkit" / f".{archive.filename}.extracted"
        if done.exists():
            continue
        path = download(archive.mirrors, download_dir / archive.filename, archive.md5,
                        advice="; or point data.root at a folder that already holds VOCdevkit")
        extract(path, root)
        done.write_text(archive.md5 + "\n")
    return root


def repository_file(relative: str, sha256: str = "") -> Path:
    """A file this repository keeps (``checkpoints/...``, ``results/...``): from the checkout when detrlib runs
    from one, else downloaded once from the repository into :func:`~detrlib.config.workdir` (as on Colab, where
    only the package is installed) and checked against ``sha256`` when given."""
    local = Path(__file__).resolve().parents[2] / relative
    if local.exists():
        return local
    return download([repository_url(relative)], workdir() / relative, sha256, "sha256")
