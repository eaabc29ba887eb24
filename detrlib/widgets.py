"""Interactive explorers that still read well as static pages, captioned figures, and sentences that quote what a run
measured.

In a live notebook (Jupyter, Colab) :func:`explore` shows ipywidgets controls over a drawing. When a notebook is
executed to build the book, nobody can move a slider, so with ``DETRLIB_STATIC_WIDGETS=1`` (set by ``make book``) it
draws the same view for a few chosen settings instead, one figure each. :func:`say` shows a sentence as Markdown, and
:func:`show` a figure with its caption: plain Markdown outputs, which Jupyter, Colab and the built site all render.
"""
from __future__ import annotations

import os
from typing import Callable

import matplotlib.pyplot as plt


def static_mode() -> bool:
    return os.environ.get("DETRLIB_STATIC_WIDGETS", "") not in ("", "0")


def explore(draw: Callable[..., object], static: list[dict], caption: str, **controls):
    """Show ``draw(**values)`` (one matplotlib figure) under ipywidgets ``controls`` (or the abbreviations
    ``ipywidgets.interactive`` accepts), or statically for each dict in ``static``, with ``caption`` below.

    In a live notebook the first static setting is drawn as a plain figure first, so that a saved notebook shows it
    where no kernel draws the widget's. Returns the widget, or ``None`` in static mode.
    """
    if not static:
        raise ValueError("explore() needs at least one static setting for the built book")
    settings = static if static_mode() else static[:1]
    for values in settings:
        draw(**values)
        plt.gcf().suptitle(", ".join(f"{k} = {v}" for k, v in values.items()), fontsize=9)
        plt.show()
    if static_mode():
        say(f"**Figure.** {caption}")
        return None

    import ipywidgets
    from IPython.display import display

    def redraw(**values):
        draw(**values)
        plt.show()

    say(f"**Figure.** {caption} Move the controls below to redraw it.")
    widget = ipywidgets.interactive(redraw, **controls)
    display(widget)
    return widget


def say(text: str) -> None:
    """Show ``text``, a sentence of the page that quotes numbers this run measured, as Markdown: Jupyter, Colab and
    the built site render it like the prose around it (the site hides the code of a cell tagged ``remove-input``).
    Outside a notebook it is printed."""
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:
        get_ipython = None
    if get_ipython is None or get_ipython() is None:
        print(text)
        return
    display(Markdown(text))


def show(caption: str) -> None:
    """Show the figure just drawn, then ``caption``, one or two sentences saying what it shows, under it."""
    plt.show()
    say(f"**Figure.** {caption}")
