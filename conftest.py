"""What tests/ and notebooks/ share in one pytest session (`make test` collects both)."""
import os

import pytest

from detrlib.config import workdir

# One OpenMP thread per process (this one, the kernels and the commands the tests start) unless the caller
# set another: on a 2-core machine doing other work, torch's two threads in a process wait on each other
# and a chapter runs several times slower. `make test` runs two such processes side by side instead.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    """Under pytest-xdist, a notebook's kernel (started by its first cell's setup) trains into a runs
    folder of its process's own: the chapters share their runs (chapter 5 reuses the run chapter 4
    trained), and two chapters taken by two processes at once would otherwise ask for one run folder
    together. A chapter that finds no run trains it (seconds, in the smoke profile)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if item.path.suffix != ".ipynb" or not worker or os.environ.get("DETRLIB_RUNS"):
        yield
        return
    os.environ["DETRLIB_RUNS"] = str(workdir() / f"runs-{worker}")
    try:
        yield
    finally:
        del os.environ["DETRLIB_RUNS"]


def pytest_collection_modifyitems(items):
    """The files holding a slow test first, then the notebooks, then the rest (each file's own order kept):
    `make test` hands whole files to its two processes in this order (--no-loadscope-reorder), so the
    long ones start early and the processes finish together instead of one waiting on the other."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: 0 if item.path in slow else 1 if item.path.suffix == ".ipynb" else 2)
