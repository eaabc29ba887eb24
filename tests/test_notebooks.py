"""Every chapter notebook is paired, clean, Colab-ready and follows the chapter pattern."""
import re

import jupytext
import nbformat
import pytest

from book_layout import ROOT, notebooks, repository, toc_files, twin

NOTEBOOKS = notebooks()
IDS = [nb.stem for nb in NOTEBOOKS]


def test_there_are_chapters():
    assert NOTEBOOKS, "no notebooks/NN_topic.ipynb found"


def code_and_text(cells):
    return [(c.cell_type, c.source.strip()) for c in cells]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_pair_in_sync(path):
    md = twin(path)
    assert md.exists(), f"{path.name} has no MyST twin {md.relative_to(ROOT)}: run `make sync`"
    from_md = jupytext.read(md)
    from_ipynb = nbformat.read(path, as_version=4)
    assert code_and_text(from_md.cells) == code_and_text(from_ipynb.cells), (
        f"{path.name} and {md.name} differ: edit one, then run `make sync`")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_without_outputs_or_widget_state(path):
    nb = nbformat.read(path, as_version=4)
    assert "widgets" not in nb.metadata, f"{path.name} carries widget state: run `make sync`"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has outputs: run `make sync`"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"
        assert set(cell.metadata) <= {"tags"}, f"{path.name} cell {i} metadata {dict(cell.metadata)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_chapter_opens_with_badge_setup_and_parameters(path):
    url, branch = repository()
    nb = nbformat.read(path, as_version=4)
    first, setup, params = nb.cells[0], nb.cells[1], nb.cells[2]
    slug = url.removeprefix("https://github.com/")
    badge = f"https://colab.research.google.com/github/{slug}/blob/{branch}/notebooks/{path.name}"
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    assert badge in first.source, f"{path.name}: the Colab badge must open {badge}"
    assert setup.cell_type == "code" and '"google.colab" in sys.modules' in setup.source
    installs = re.findall(r"pip install[^\n]*", setup.source)
    assert installs == [f'pip install -q "detrlib @ git+{url}@{branch}"'], (
        f"{path.name}: on Colab the setup cell installs only detrlib from {url}@{branch}")
    assert "torch" not in setup.source.replace("# Setup: on Colab, install detrlib from the repository. "
                                               "Colab already has torch: never reinstall it.", "")
    assert params.cell_type == "code" and "parameters" in params.metadata.get("tags", [])
    assert re.search(r"^PROFILE = ", params.source, re.M)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_chapter_has_objectives_summary_and_folded_exercises(path):
    text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    assert "**In this chapter you will**" in text
    assert re.search(r"^## Summary$", text, re.M), f"{path.name} has no Summary section"
    exercises = text.split("## Exercises", 1)
    assert len(exercises) == 2, f"{path.name} has no Exercises section"
    questions, folded, solutions = exercises[1].partition("<details>\n<summary>Solutions</summary>")
    assert folded, f"{path.name}: the solutions must be folded in <details><summary>Solutions</summary>"
    assert 2 <= len(re.findall(r"^\d+\. ", questions, re.M)) <= 4, f"{path.name}: 2-4 exercises"
    assert re.search(r"^\d+\. ", solutions, re.M), f"{path.name}: the folded block has no solutions"
    assert "{cite:p}`" in text or "{cite:t}`" in text, f"{path.name} cites no paper"


def test_every_notebook_is_in_the_toc_and_every_toc_entry_exists():
    entries = toc_files()
    for path in NOTEBOOKS:
        assert f"notebooks/{path.stem}" in entries, f"{path.name} is missing from _toc.yml"
    for entry in entries:
        assert list(ROOT.glob(entry + ".*")), f"_toc.yml lists {entry}, which does not exist"
