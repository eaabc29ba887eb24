"""Interactive explorers that still read well as static pages, and numbers for a page's prose.

In a live notebook (Jupyter, Colab) :func:`explore` shows ipywidgets controls over a drawing.
When a notebook is executed to build the book, nobody can move a slider, so with
``DETRLIB_STATIC_WIDGETS=1`` (set by ``make book``) it draws the same view for a few chosen
settings instead, one figure each. :func:`glue` hands a measured value to the page's text.
"""
from __future__ import annotations

import os
from typing import Callable

import matplotlib.pyplot as plt


def static_mode() -> bool:
    return os.environ.get("DETRLIB_STATIC_WIDGETS", "") not in ("", "0")


def _caption(values: dict) -> str:
    return ", ".join(f"{k} = {v}" for k, v in values.items())


def explore(draw: Callable[..., object], static: list[dict], **controls):
    """Show ``draw(**values)`` under ipywidgets ``controls``, or statically for each dict in ``static``.

    ``draw`` makes one matplotlib figure for one setting of the controls. ``controls`` are
    ipywidgets (or the abbreviations ``ipywidgets.interactive`` accepts). Returns the widget, or
    ``None`` in static mode.
    """
    if not static:
        raise ValueError("explore() needs at least one static setting for the built book")
    if static_mode():
        for values in static:
            draw(**values)
            plt.gcf().suptitle(_caption(values), fontsize=9)
            plt.show()
        return None

    import ipywidgets
    from IPython.display import display

    def show(**values):
        draw(**values)
        plt.show()

    widget = ipywidgets.interactive(show, **controls)
    display(widget)
    return widget


def glue(name: str, value) -> None:
    """Hand ``value``, measured by this run, to the page's prose, which quotes it as
    ``{glue:text}`name``` or ``{glue:text}`name:.3f```: a rebuild on another machine then changes
    the words with the numbers. This is myst-nb's ``glue``, shown nowhere in the notebook; where
    myst-nb is not installed (Colab) it does nothing, and the cell's printed output carries the number."""
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        return
    if hasattr(value, "item"):  # a tensor or numpy scalar: its plain Python value formats in the text
        value = value.item()
    myst_glue(name, value, display=False)
