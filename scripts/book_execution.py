"""A Sphinx extension (``_config.yml``'s ``sphinx.local_extensions``) that gives myst-nb the book's
limit on one cell, :data:`detrlib.config.BOOK_CELL_SECONDS`: it is written there once, next to the
quick profile's wall-clock cap that must end a run inside it (YAML cannot read a Python constant)."""
from detrlib.config import BOOK_CELL_SECONDS


def set_cell_timeout(app, config) -> None:
    config.nb_execution_timeout = BOOK_CELL_SECONDS


def setup(app):
    app.connect("config-inited", set_cell_timeout)  # myst-nb reads its settings later, at builder-inited
    return {"parallel_read_safe": True, "parallel_write_safe": True}
