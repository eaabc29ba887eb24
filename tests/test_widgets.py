"""A page's measured sentences and captions are Markdown outputs that Jupyter, Colab and the site all
render, and an explorer leaves a plain figure behind wherever no kernel runs its controls."""
import matplotlib.pyplot as plt
import pytest
from IPython.core.interactiveshell import InteractiveShell

from detrlib import widgets


@pytest.fixture
def notebook(monkeypatch):
    """What a notebook cell displays: every object handed to IPython's ``display``, in order."""
    shown = []
    shell = InteractiveShell.instance()
    monkeypatch.setattr(shell, "display_pub", type("Publisher", (), {
        "publish": lambda self, data, metadata=None, **kw: shown.append(data),
        "clear_output": lambda self, wait=False: None, "is_publishing": False})())
    monkeypatch.setattr(plt, "show", lambda: shown.append({"figure": plt.gcf().number}) or plt.close("all"))
    yield shown
    InteractiveShell.clear_instance()


def test_say_displays_markdown_in_a_notebook_and_prints_elsewhere(notebook, capsys):
    widgets.say("The warm-up lasts **50** steps.")
    assert [d["text/markdown"] for d in notebook] == ["The warm-up lasts **50** steps."]
    InteractiveShell.clear_instance()
    widgets.say("The warm-up lasts 50 steps.")
    assert capsys.readouterr().out == "The warm-up lasts 50 steps.\n"


def test_a_figure_is_shown_with_its_caption_below(notebook):
    plt.plot([0, 1])
    widgets.show("The learning rate at every step.")
    assert "figure" in notebook[0] and notebook[1]["text/markdown"] == "**Figure.** The learning rate at every step."


def test_a_live_explorer_draws_its_first_setting_as_a_plain_figure_first(notebook, monkeypatch):
    monkeypatch.delenv("DETRLIB_STATIC_WIDGETS", raising=False)
    drawn = []
    widget = widgets.explore(lambda k: drawn.append(k) or plt.plot([k]), static=[{"k": 1}, {"k": 2}],
                             caption="One line per k.", k=(0, 3))
    assert drawn[0] == 1 and "figure" in notebook[0]  # readable in a saved notebook, kernel or not
    assert notebook[1]["text/markdown"].startswith("**Figure.** One line per k.")
    assert widget is not None and "application/vnd.jupyter.widget-view+json" in notebook[-1]


def test_the_built_book_draws_every_static_setting_then_the_caption(notebook, monkeypatch):
    monkeypatch.setenv("DETRLIB_STATIC_WIDGETS", "1")
    drawn = []
    assert widgets.explore(lambda k: drawn.append(k) or plt.plot([k]), static=[{"k": 1}, {"k": 2}],
                           caption="One line per k.", k=(0, 3)) is None
    assert drawn == [1, 2] and [("figure" in d, "text/markdown" in d) for d in notebook] == [
        (True, False), (True, False), (False, True)]
