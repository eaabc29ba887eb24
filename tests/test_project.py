"""The two-command setup: requirements, packaging, README, CI script, and setup's bad-input messages."""
import os
import re
import shutil
import subprocess
import sys

import pytest

from book_layout import ROOT, repository

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib

# What Colab already has; detrlib's runtime dependencies may add only small pure-Python packages.
COLAB_HAS = {"torch", "torchvision", "numpy", "scipy", "matplotlib", "pillow", "tqdm", "pycocotools"}
PURE_PYTHON = {"defusedxml"}


def requirement_lines(text):
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def test_requirements_use_ranges_never_pins():
    lines = requirement_lines((ROOT / "requirements.txt").read_text())
    names = {re.split(r"[<>=!~\[ ]", ln)[0].lower() for ln in lines}
    for required in ["torch", "torchvision", "jupyter", "jupytext", "nbval", "scipy", "matplotlib",
                     "ipywidgets", "jupyter-book"]:
        assert required in names, f"requirements.txt lacks {required}"
    for ln in lines:
        assert "==" not in ln and "===" not in ln, f"exact pin in requirements.txt: {ln}"
    assert "jupyter-book>=1.0.4,<2" in lines, "jupyter-book must stay 1.x (2.x ignores _config.yml/_toc.yml)"


def test_package_dependencies_are_what_colab_has():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {re.split(r"[<>=!~\[ ]", d)[0].lower() for d in meta["dependencies"]}
    assert deps <= COLAB_HAS | PURE_PYTHON, f"unexpected runtime dependencies: {deps - COLAB_HAS - PURE_PYTHON}"
    assert not any("==" in d for d in meta["dependencies"])
    url, branch = repository()
    assert meta["urls"]["Homepage"] == url, "pyproject.toml and _config.yml name different repositories"
    from detrlib.config import BRANCH, REPOSITORY

    assert (REPOSITORY, BRANCH) == (url, branch), "detrlib.config and _config.yml name different repositories"


def test_readme_opens_with_the_two_commands_and_ci_runs_its_test_command():
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", readme, re.S).group(1)
    assert [ln for ln in first_block.splitlines() if ln.strip()][:2] == ["make book", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, re.M), ".ci/run must run the README's test command"


def test_ci_script_says_when_make_is_missing(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    result = subprocess.run(["/bin/bash", str(ROOT / ".ci" / "run")], env={"PATH": str(empty)},
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == "ci: 'make' is missing: install it (apt-get install make) and rerun"


def bootstrap(tmp_path, **env):
    shutil.copy(ROOT / "scripts" / "bootstrap.sh", tmp_path)
    full_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env}
    return subprocess.run(["bash", "bootstrap.sh"], cwd=tmp_path, env=full_env, capture_output=True, text=True)


def test_setup_rejects_an_old_python_in_one_line(tmp_path):
    fake = tmp_path / "python3.9"
    fake.write_text("#!/bin/sh\nif [ \"$1\" = -V ]; then echo 'Python 3.9.18'; exit 0; fi\nexit 1\n")
    fake.chmod(0o755)
    result = bootstrap(tmp_path, PYTHON=str(fake))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Python 3.9.18 is too old" in lines[0] and "3.10" in lines[0]
    assert not (tmp_path / ".venv").exists()


@pytest.mark.slow
def test_setup_explains_an_unreachable_package_index(tmp_path):
    (tmp_path / "requirements.txt").write_text("six>=1.0\n")
    (tmp_path / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "x"\nversion = "0"\n')
    result = bootstrap(tmp_path, PYTHON=sys.executable, PIP_CONFIG_FILE="/dev/null",
                       PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_FIND_LINKS="", PIP_NO_CACHE_DIR="1")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "package index could not be reached" in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr
