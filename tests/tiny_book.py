"""A book of a few pages in a folder of its own, built by the repository's own `make book` (its
Makefile, scripts, detrlib and page check copied next to the pages): the book build's slow tests."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from book_layout import ROOT

COPIED = ("Makefile", "requirements.txt", "pyproject.toml", "scripts", "detrlib", "tests/book_layout.py",
          "tests/book_pages.py")

PAGE = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# {title}

```{{code-cell}} ipython3
{code}
```
{text}
"""


def write_page(root: Path, name: str, code: str, text: str = "") -> None:
    """The page ``name`` (``pages/x``): a heading, one code cell and ``text`` after it."""
    (root / f"{name}.md").parent.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.md").write_text(PAGE.format(title=Path(name).name.title(), code=code, text=text))


def tiny_book(root: Path, pages: dict[str, str], timeout: int = 30) -> None:
    """A book in ``root`` whose toc holds ``pages`` (name -> the code of its one cell) after a root
    page, each cell allowed ``timeout`` seconds."""
    for name in COPIED:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, root / name)
    (root / "intro.md").write_text("# Tiny\n\nA book of a few pages.\n")
    for name, code in pages.items():
        write_page(root, name, code)
    chapters = "".join(f"      - file: {name}\n" for name in pages)
    (root / "_toc.yml").write_text(f"format: jb-book\nroot: intro\nparts:\n  - caption: Pages\n    chapters:\n{chapters}")
    (root / "_config.yml").write_text(f"title: tiny\nonly_build_toc_files: true\nexclude_patterns: [detrlib, scripts, tests]\n"
                                      f"execute:\n  execute_notebooks: cache\n  timeout: {timeout}\n")
    (root / "installed").touch()  # stands for the Makefile's setup stamp: the running .venv is used as it is


def make_book(root: Path) -> subprocess.CompletedProcess:
    """`make book` in ``root``, with this .venv and no DETRLIB_* variable of the caller."""
    venv = Path(sys.executable).parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DETRLIB_")}
    return subprocess.run(["make", "--no-print-directory", "book", f"VENV={venv}", f"STAMP={root / 'installed'}"],
                          cwd=root, env=env,
                          capture_output=True, text=True)
