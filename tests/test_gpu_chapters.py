"""The chapters that train, run top to bottom in the gpu profile on the CPU at toy size, so that a
Colab reader is never the first to run their GPU cells: DETR-R50 from an official-format checkpoint
with random values, on a generated VOC-format tree, with the profile's settings shrunk through
``DETRLIB_SET`` (small images, 2 steps, a few validation images), and the timing loops the cells size
for a GPU cut to a few calls on toy-size images (``toy_timing``). Chapter 4 runs in the gpu profile in
tests/test_colab_session.py, as a reader on a T4 runs it."""
import json
import os
import shutil

import nbformat
import pytest
from nbclient import NotebookClient

from book_layout import ROOT

pytestmark = pytest.mark.slow
CHAPTERS = ["05_denoising", "06_pruning"]  # with chapter 4, the chapters whose cells differ on a GPU
SITECUSTOMIZE = """import os

if os.environ.pop("TOY_TIMING", ""):  # in the kernel only, not in its children
    import toy_timing

    toy_timing.install()
"""


@pytest.fixture(scope="module")
def gpu_at_toy_size(tmp_path_factory, gpu_profile_at_toy_size):
    work = tmp_path_factory.mktemp("gpu-chapters")
    stubs = work / "stubs"
    stubs.mkdir()
    shutil.copy(ROOT / "tests" / "toy_timing.py", stubs)
    (stubs / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {"DETRLIB_PROFILE": "gpu", "DETRLIB_SET": json.dumps(gpu_profile_at_toy_size),
           "DETRLIB_HOME": str(work / "home"), "DETRLIB_STATIC_WIDGETS": "1", "TQDM_DISABLE": "1",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{stubs}", "OMP_NUM_THREADS": "1", "TOY_TIMING": "1"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # the kernels inherit this environment
    yield work
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_chapter_runs_in_the_gpu_profile(chapter, gpu_at_toy_size):
    nb = nbformat.read(ROOT / "notebooks" / f"{chapter}.ipynb", as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    text = "\n".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)
    assert "profile gpu: resnet50" in text and "expected: about" in text  # the plan, printed before training
    runs = list((gpu_at_toy_size / "home" / "runs").glob("gpu-*"))
    assert runs and all(json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 2 for run in runs)
    if chapter == "06_pruning":
        assert "rows of the model's classes" in text  # the COCO checkpoint as a VOC detector
        assert "fine-tune: whole gpu runs" in text and len(runs) == 3  # vanilla, denoising and usage-pruned
