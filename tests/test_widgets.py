"""Numbers a page's prose quotes are glued from the run (myst-nb), and Colab, without myst-nb, runs on."""
import sys

import torch

from detrlib import widgets


def test_glue_hands_myst_nb_a_plain_value_shown_nowhere(monkeypatch):
    import myst_nb

    calls = []
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=True: calls.append((name, value, display)))
    widgets.glue("ap50", torch.tensor(0.25))
    widgets.glue("verdict", "denoising got there first")
    assert calls == [("ap50", 0.25, False), ("verdict", "denoising got there first", False)]
    assert type(calls[0][1]) is float  # "{glue:text}`ap50:.3f`" formats a float, not "tensor(0.25)"


def test_glue_does_nothing_where_myst_nb_is_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "myst_nb", None)  # importing it now raises ImportError, as on Colab
    assert widgets.glue("ap50", 0.25) is None
