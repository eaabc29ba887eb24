"""Publishing as Jupyter Book projects do: workflows that run the README's commands, a book cache that a
library change invalidates, and one place for the repository's address."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from book_layout import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import book_cache  # noqa: E402
import sync_repository  # noqa: E402

WORKFLOWS = ROOT / ".github" / "workflows"


def readme_commands() -> list[str]:
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip()]


def run_steps(workflow: str) -> list[str]:
    jobs = yaml.safe_load((WORKFLOWS / workflow).read_text())["jobs"]
    return [step["run"] for job in jobs.values() for step in job["steps"] if "run" in step]


def uses(workflow: str) -> list[str]:
    jobs = yaml.safe_load((WORKFLOWS / workflow).read_text())["jobs"]
    return [step["uses"].split("@")[0] for job in jobs.values() for step in job["steps"] if "uses" in step]


def test_the_workflows_run_the_readme_commands_and_deploy_the_site():
    book_command, test_command = readme_commands()[:2]
    assert run_steps("test.yml") == ["bash .ci/run"]
    assert re.search(rf"^{test_command}\b", (ROOT / ".ci" / "run").read_text(), re.M)
    assert book_command in run_steps("book.yml")
    assert {"actions/cache", "actions/upload-pages-artifact", "actions/deploy-pages"} <= set(uses("book.yml"))
    cached = yaml.safe_load((WORKFLOWS / "book.yml").read_text())["jobs"]["build"]["steps"]
    paths = next(s["with"]["path"] for s in cached if s.get("uses", "").startswith("actions/cache"))
    assert "_build/.jupyter_cache" in paths and "_build/.detrlib-code" in paths


def test_the_fingerprint_follows_code_not_comments_or_docstrings(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    module = package / "m.py"
    module.write_text('"""Docs."""\n\ndef f():\n    """Say 1."""\n    return 1  # one\n')
    before = book_cache.fingerprint(package)
    module.write_text('"""Other docs."""\n\ndef f():\n    """Say one."""\n    return 1  # the number one\n')
    assert book_cache.fingerprint(package) == before
    module.write_text('"""Docs."""\n\ndef f():\n    return 2\n')
    assert book_cache.fingerprint(package) != before


def test_a_fork_needs_one_change(tmp_path):
    for name in ("_config.yml", "pyproject.toml", "detrlib/config.py", *[f"book/{p.name}" for p in (ROOT / "book").glob("0*.md")]):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    url, branch = sync_repository.repository(ROOT)
    config = (tmp_path / "_config.yml").read_text().replace(url, "https://github.com/someone/fork")
    (tmp_path / "_config.yml").write_text(config.replace(f"branch: {branch}", "branch: dev"))
    changed = sync_repository.rewrite(tmp_path)
    assert {p.name for p in changed} >= {"config.py", "pyproject.toml", "04_training.md"}
    everything = "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file() and p.name != "_config.yml")
    assert url not in everything
    chapter = (tmp_path / "book" / "04_training.md").read_text()
    assert "colab.research.google.com/github/someone/fork/blob/dev/notebooks/04_training.ipynb" in chapter
    assert '"detrlib @ git+https://github.com/someone/fork@dev"' in chapter
    assert 'REPOSITORY = "https://github.com/someone/fork"' in (tmp_path / "detrlib/config.py").read_text()
    assert sync_repository.rewrite(tmp_path) == []  # a second run has nothing left to do


TINY_PAGE = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# Tiny

```{code-cell} ipython3
import os

import detrlib

print("executed by process", os.getpid())
```
"""


@pytest.mark.slow
def test_changing_detrlib_makes_make_book_run_the_chapters_again(tmp_path):
    """A one-page book built with the Makefile's book target: rebuilt after a docstring change, the
    page comes from the cache; after a change to detrlib's code it is executed again."""
    for name in ("Makefile", "requirements.txt", "pyproject.toml", "scripts", "detrlib"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, tmp_path / name)
    (tmp_path / "page.md").write_text(TINY_PAGE)
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: page\n")
    (tmp_path / "_config.yml").write_text("title: tiny\nonly_build_toc_files: true\nexclude_patterns: [detrlib, scripts]\n"
                                          "execute:\n  execute_notebooks: cache\n")
    stamp = tmp_path / "installed"
    stamp.touch()
    venv = Path(sys.executable).parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DETRLIB_")}

    def build() -> str:
        done = subprocess.run(["make", "book", f"VENV={venv}", f"STAMP={stamp}"], cwd=tmp_path, env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return re.search(r"executed by process (\d+)", (tmp_path / "_build/html/page.html").read_text()).group(1)

    first = build()
    config = tmp_path / "detrlib" / "config.py"
    config.write_text(config.read_text().replace('"""Every knob', '"""Each knob', 1))
    assert build() == first  # a docstring is not code: the cached execution
    config.write_text(config.read_text() + "\nCHANGED = True\n")
    assert build() != first
