"""Publishing as Jupyter Book projects do: workflows that run the README's commands, a book cache that a
library change invalidates, and one place for the repository's address."""
import re
import shutil
import sys

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
    assert {"_build/.jupyter_cache", "_build/.detrlib-code", "_build/.book-inputs"} <= set(paths.split())


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
    tag = sync_repository.release_tag(ROOT)
    assert f'"detrlib @ git+https://github.com/someone/fork@{tag}"' in chapter  # the release, not the branch
    assert 'REPOSITORY = "https://github.com/someone/fork"' in (tmp_path / "detrlib/config.py").read_text()
    assert sync_repository.rewrite(tmp_path) == []  # a second run has nothing left to do


def test_a_release_pins_every_install_cell_to_its_tag(tmp_path):
    """The install cell installs the tag of detrlib's version, which ``make sync`` writes after a bump."""
    import detrlib

    assert sync_repository.release_tag(ROOT) == f"v{detrlib.__version__}", (
        "pyproject.toml's version and detrlib.__version__ differ: bump both")
    for name in ("_config.yml", "pyproject.toml", "detrlib/config.py", "book/04_training.md", "book/08_results.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(re.sub(r'^version = "[^"]+"', 'version = "9.8.7"', pyproject.read_text(), flags=re.M))
    assert {p.name for p in sync_repository.rewrite(tmp_path)} == {"04_training.md", "08_results.md"}
    url, _ = sync_repository.repository(ROOT)
    for chapter in ("04_training.md", "08_results.md"):
        installs = re.findall(r'pip install -q "detrlib @ [^"]+"', (tmp_path / "book" / chapter).read_text())
        assert installs == [f'pip install -q "detrlib @ git+{url}@v9.8.7"']
