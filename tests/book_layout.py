"""What the tests read from the book's configuration: the repository, the toc, the notebook pairs."""
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def book_config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def repository() -> tuple[str, str]:
    """(url, branch) from _config.yml, the one place they are written."""
    repo = book_config()["repository"]
    return repo["url"].rstrip("/"), repo["branch"]


def release_tag() -> str:
    """The tag a chapter's install cell pins: ``v`` and pyproject.toml's version."""
    return "v" + re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


def notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def twin(notebook: Path) -> Path:
    return ROOT / "book" / (notebook.stem + ".md")
