"""Every chapter notebook is paired, clean, Colab-ready and follows the chapter pattern."""
import re
import shutil
import sys

import jupytext
import nbformat
import pytest
from jupytext.config import load_jupytext_configuration_file

from book_layout import ROOT, notebooks, release_tag, repository, toc_files, twin

sys.path.insert(0, str(ROOT / "scripts"))
import clean_notebooks  # noqa: E402

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
    assert installs == [f'pip install -q "detrlib @ git+{url}@{release_tag()}"'], (
        f"{path.name}: on Colab the setup cell installs only detrlib, the release {release_tag()} of {url} "
        "(run `make sync`)")
    assert "torch" not in setup.source.replace("# Setup: on Colab, install the detrlib release this chapter was "
                                               "written with. Colab already has torch: never reinstall it.", "")
    assert params.cell_type == "code" and "parameters" in params.metadata.get("tags", [])
    assert re.search(r"^PROFILE = ", params.source, re.M)
    banner = nb.cells[3]
    assert banner.cell_type == "code" and "gpu_runtime_banner(PROFILE)" in banner.source, (
        f"{path.name}: the cell after the parameters prints, on Colab without a GPU, how to switch the runtime")


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
    papers = set(re.findall(r"url\s*=\s*\{([^}]+)\}", (ROOT / "book" / "references.bib").read_text()))
    links = set(re.findall(r"\]\((https?://[^)\s]+)\)", text))
    assert links & papers, f"{path.name} cites no paper of book/references.bib (a link to its url)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_colab_opens_the_chapter_on_a_gpu_runtime(path):
    """Colab reads the notebook's ``accelerator`` and ``colab.gpuType`` to pick the runtime it opens."""
    meta = nbformat.read(path, as_version=4).metadata
    assert (meta.get("accelerator"), meta.get("colab", {}).get("gpuType")) == ("GPU", "T4"), (
        f"{path.name} opens on a CPU runtime in Colab: its twin's front matter needs accelerator: GPU and "
        "colab: {gpuType: T4}")
    assert jupytext.read(twin(path)).metadata["colab"] == meta["colab"]


def test_make_sync_keeps_the_colab_runtime(tmp_path):
    """Both steps of ``make sync`` keep it: jupytext's metadata filter, and the cleaning that strips outputs
    (and what Colab adds when it saves: the notebook's name, its history)."""
    path = tmp_path / NOTEBOOKS[0].name
    shutil.copy(NOTEBOOKS[0], path)
    nb = nbformat.read(path, as_version=4)
    nb.metadata["colab"] |= {"name": "copy of a chapter", "provenance": [{"file_id": "1x"}]}
    nb.metadata["widgets"] = {"state": {}}
    nbformat.write(nb, path)
    assert clean_notebooks.clean(str(path))
    kept = nbformat.read(path, as_version=4).metadata
    assert kept["accelerator"] == "GPU" and kept["colab"] == {"gpuType": "T4", "provenance": []}
    assert "widgets" not in kept
    config = load_jupytext_configuration_file(str(ROOT / "jupytext.toml"))
    front = jupytext.writes(nb, "md:myst", config=config).split("---")[1]
    assert "accelerator: GPU" in front and "gpuType: T4" in front and "widgets" not in front


def test_every_notebook_is_in_the_toc_and_every_toc_entry_exists():
    entries = toc_files()
    for path in NOTEBOOKS:
        assert f"notebooks/{path.stem}" in entries, f"{path.name} is missing from _toc.yml"
    for entry in entries:
        assert list(ROOT.glob(entry + ".*")), f"_toc.yml lists {entry}, which does not exist"


def test_the_full_recipe_is_one_command():
    """Wherever the chapters and the README give the command that trains the full recipe on Colab, it
    is the same command, into the runs folder the chapters' Drive cell sets up."""
    pages = [ROOT / "README.md", *sorted((ROOT / "book").glob("*.md"))]
    found = {(page.name, match.group(0).strip()) for page in pages
             for match in re.finditer(r"python -m detrlib train --profile full --out /content/drive[^\n`]*",
                                      page.read_text())}
    commands = {command for _, command in found}
    assert len(commands) == 1, f"the full recipe's command differs between pages: {sorted(found)}"
    assert "/content/drive/MyDrive/detrlib/runs/" in commands.pop()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_figure_has_a_caption_and_fits_a_notebook_column(path):
    """A chapter shows a figure with ``detrlib.widgets.show(caption)`` (or ``explore``, whose caption is an
    argument), never a bare ``plt.show()``, and draws none wider than a notebook column."""
    from detrlib.viz import PAGE_WIDTH

    code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    assert "plt.show()" not in code, f"{path.name}: show a figure with detrlib.widgets.show(caption), not plt.show()"
    wide = [w for w in re.findall(r"figsize=\(\s*([\d.]+)", code) if float(w) > PAGE_WIDTH]
    assert not wide, f"{path.name}: figures {wide} inches wide, wider than a notebook column ({PAGE_WIDTH})"
