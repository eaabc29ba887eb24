"""Make every copy of the repository address follow ``_config.yml``, the one place it is written.

``repository.url`` and ``repository.branch`` in ``_config.yml`` drive the site's Colab and GitHub
buttons; this script writes them into what must repeat them: each chapter's Colab badge (the branch)
and install cell (``book/NN_*.md``; ``make sync`` then pairs the notebooks), ``detrlib.config.REPOSITORY``
and ``BRANCH`` (the files detrlib fetches from the repository on Colab) and ``pyproject.toml``'s
homepage. The install cell pins the release tag of ``pyproject.toml``'s version, ``vX.Y.Z``, not the
branch, so that a notebook installs the library it was written with. To publish from a fork: change
``_config.yml``, run ``make sync``, commit, and push the tag. Usage: python
scripts/sync_repository.py [ROOT]; prints the files it changed.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml


def repository(root: Path) -> tuple[str, str]:
    repo = yaml.safe_load((root / "_config.yml").read_text())["repository"]
    return repo["url"].rstrip("/"), repo["branch"]


def release_tag(root: Path) -> str:
    """The git tag of this version of detrlib: ``v`` and ``pyproject.toml``'s version."""
    return "v" + re.search(r'^version = "([^"]+)"', (root / "pyproject.toml").read_text(), re.M).group(1)


def rewrite(root: Path) -> list[Path]:
    url, branch = repository(root)
    tag = release_tag(root)
    slug = url.removeprefix("https://github.com/")
    rules = {
        "book/[0-9][0-9]_*.md": [
            (r"https://colab\.research\.google\.com/github/[^/\s]+/[^/\s]+/blob/[^/\s]+/notebooks/",
             f"https://colab.research.google.com/github/{slug}/blob/{branch}/notebooks/"),
            (r'"detrlib @ git\+[^"@\s]+@[^"\s]+"', f'"detrlib @ git+{url}@{tag}"'),
        ],
        "detrlib/config.py": [(r'^REPOSITORY = "[^"]*"', f'REPOSITORY = "{url}"'),
                              (r'^BRANCH = "[^"]*"', f'BRANCH = "{branch}"')],
        "pyproject.toml": [(r'^Homepage = "[^"]*"', f'Homepage = "{url}"')],
    }
    changed = []
    for pattern, subs in rules.items():
        for path in sorted(root.glob(pattern)):
            text = path.read_text()
            new = text
            for old, repl in subs:
                new = re.sub(old, lambda _: repl, new, flags=re.M)
            if new != text:
                path.write_text(new)
                changed.append(path)
    return changed


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    for path in rewrite(root):
        print(f"sync_repository: {path.relative_to(root)} now follows _config.yml")
