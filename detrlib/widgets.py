"""Interactive explorers that still read well as static pages.

In a live notebook (Jupyter, Colab) :func:`explore` shows ipywidgets controls over a drawing.
When a notebook is executed to build the book, nobody can move a slider, so with
``DETRLIB_STATIC_WIDGETS=1`` (set by ``make book``) it draws the same view for a few chosen
settings instead, one figure each.
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
