"""A Colab session, simulated: detrlib installed from its wheel into an empty folder (no checkout,
no ``results/``), a fake T4 (``fake_gpu``: torch.cuda's answers patched), a stub ``google.colab``
whose ``drive.mount`` is recorded, and the network denied (a proxy that refuses every connection).
Chapters 4 and 7 run top to bottom in the ``gpu`` profile at toy size there, as a reader on a free
T4 runs them, with one server allowed: a local stand-in for GitHub's raw files, serving this
checkout's ``checkpoints/`` and ``results/`` (Colab reaches GitHub: its first cell installs from
there). Without it, an installed detrlib says in one line that the plan uses the estimate."""
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from book_layout import ROOT

pytestmark = pytest.mark.slow
NO_NETWORK = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": ""}
SITECUSTOMIZE = '''\
import os
import pathlib
import sys

if os.environ.get("FAKE_GPU"):
    import fake_gpu

    fake_gpu.install(os.environ.pop("FAKE_GPU"))  # in this process only: its children run on the CPU
import google.colab  # noqa: F401  Colab imports it before the first cell runs
import detrlib.colab
import detrlib.config

assert detrlib.config.__file__.startswith(os.environ["WHEEL_SITE"]), detrlib.config.__file__
detrlib.colab.COLAB_DRIVE = pathlib.Path(os.environ["FAKE_DRIVE"]) / "MyDrive"
if os.environ.get("FAKE_GITHUB"):
    detrlib.config.REPOSITORY = os.environ["FAKE_GITHUB"]
if "fake_gpu" in sys.modules:
    import detrlib.bench.gpu

    detrlib.bench.gpu.measure = lambda args: []  # bench gpu times a real GPU; nothing can run on a fake one
    import toy_timing

    toy_timing.install()  # the timing loops sized for a T4, at toy size on this CPU
'''
DRIVE_STUB = '''\
import json
import os
import pathlib


def mount(mountpoint, force_remount=False, **kwargs):
    root = pathlib.Path(os.environ["FAKE_DRIVE"])
    (root / "MyDrive").mkdir(parents=True, exist_ok=True)
    with open(root / "mounts.jsonl", "a") as f:
        f.write(json.dumps({"mountpoint": mountpoint}) + "\\n")
'''


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """The installed wheel and the stubs, and the environment of a process in that session."""
    work = tmp_path_factory.mktemp("colab")
    source = work / "source"
    shutil.copytree(ROOT / "detrlib", source / "detrlib", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", work / "dist", source], check=True)
    (wheel,) = (work / "dist").glob("detrlib-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", work / "site", wheel], check=True)
    stubs = work / "stubs"
    (stubs / "google" / "colab").mkdir(parents=True)  # a namespace package, like Colab's google
    (stubs / "google" / "colab" / "__init__.py").write_text("from google.colab import drive  # noqa: F401\n")
    (stubs / "google" / "colab" / "drive.py").write_text(DRIVE_STUB)
    (stubs / "sitecustomize.py").write_text(SITECUSTOMIZE)
    for helper in ("fake_gpu.py", "toy_timing.py"):
        shutil.copy(ROOT / "tests" / helper, stubs / helper)
    (work / "empty").mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("DETRLIB_")}
    env.update(NO_NETWORK, PYTHONPATH=f"{work / 'site'}{os.pathsep}{stubs}", WHEEL_SITE=str(work / "site"),
               FAKE_DRIVE=str(work / "drive"), DETRLIB_HOME=str(work / "vm"), OMP_NUM_THREADS="1",
               MPLBACKEND="Agg", DETRLIB_STATIC_WIDGETS="1", TQDM_DISABLE="1")
    return work, env


def python(env: dict, cwd: Path, code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_installed_detrlib_says_in_one_line_that_the_offline_plan_uses_the_estimate(colab):
    work, env = colab
    out = python(env, work / "empty", "import detrlib.budget as b\nfrom detrlib.config import profile_settings\n"
                                      "print(b.chapter_plan('04_training', profile_settings('gpu')))")
    (line,) = [line for line in out.splitlines() if "no T4 measurement" in line]
    assert "github.com/detrlib/detr-book" in line and "could not be reached" in line
    assert line.endswith("the minutes below use detrlib.budget's estimate")
    assert "(estimate: " in out


@contextmanager
def github(folder: Path):
    """A local stand-in for GitHub's raw files, serving ``folder/detrlib/detr-book/main/...``; yields
    the repository address detrlib is pointed at."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/detrlib/detr-book"
    finally:
        httpd.shutdown()


def test_committed_results_reach_an_installed_detrlib(colab, tmp_path):
    """The repository serves results/index.json and the files it lists: the budget then uses a
    committed T4 measurement, and chapter 8 finds the ablation."""
    work, env = colab
    served = tmp_path / "served" / "detrlib" / "detr-book" / "main" / "results"
    served.mkdir(parents=True)
    t4 = {"gpu": "Tesla T4", "date": "2026-11-30", "command": "python -m detrlib bench gpu --out results/gpu-t4.json",
          "rows": [{"config": "R50 6/4/50 DN5", "profile": "gpu", "precision": "amp fp16 + GradScaler",
                    "train steps/s": 2.0}]}
    (served / "gpu-t4.json").write_text(json.dumps(t4))
    shutil.copy(ROOT / "results" / "quick-ablation.json", served)
    from detrlib.results import write_index

    write_index(served)
    with github(tmp_path / "served") as repository:
        code = ("from detrlib import budget\nfrom detrlib.ablation import measured_results\n"
                "from detrlib.config import profile_settings\n"
                "print(budget.step_seconds(profile_settings('gpu')))\nprint(measured_results().name)")
        out = python({**env, "no_proxy": "127.0.0.1", "FAKE_GITHUB": repository}, work / "empty", code)
    assert out.splitlines() == ["(0.5, 'measured')", "quick-ablation.json"]
    fetched = Path(env["DETRLIB_HOME"]) / "results"
    assert (fetched / "gpu-t4.json").exists() and (fetched / "index.json").exists()


@pytest.fixture(scope="module")
def chapters_on_a_t4(colab, gpu_profile_at_toy_size):
    """Chapters 4 and 7 as a reader on a free T4 runs them (on the CPU, shrunk by DETRLIB_SET)."""
    work, env = colab
    branch = work / "github" / "detrlib" / "detr-book" / "main"
    branch.mkdir(parents=True)
    for folder in ("checkpoints", "results"):
        (branch / folder).symlink_to(ROOT / folder)
    outputs, skipped = {}, []
    saved = dict(os.environ)
    with github(work / "github") as repository:
        # no DETRLIB_PROFILE: the fake T4 picks the gpu profile
        kernel_env = {**env, "FAKE_GPU": "Tesla T4", "DETRLIB_SET": json.dumps(gpu_profile_at_toy_size),
                      "no_proxy": "127.0.0.1", "FAKE_GITHUB": repository}
        os.environ.clear()
        os.environ.update(kernel_env)  # the kernel inherits this environment
        try:
            for chapter in ("04_training", "07_mixed_precision"):
                nb = nbformat.read(ROOT / "notebooks" / f"{chapter}.ipynb", as_version=4)
                for cell in nb.cells:
                    if cell.cell_type == "code" and "%pip install" in cell.source:
                        skipped.append(cell.source)  # installs from GitHub: the one cell this session cannot run
                        cell.source = "# skipped by tests/test_colab_session.py: the %pip install of detrlib"
                NotebookClient(nb, timeout=900, kernel_name="python3",
                               resources={"metadata": {"path": str(work / "empty")}}).execute()
                outputs[chapter] = "\n".join(
                    out.get("text", "") or "".join(out.get("data", {}).get("text/plain", ""))
                    for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)
        finally:
            os.environ.clear()
            os.environ.update(saved)
    return work, outputs, skipped


def test_a_t4_session_plans_fp16_keeps_its_runs_on_drive_and_shows_no_traceback(chapters_on_a_t4):
    work, outputs, skipped = chapters_on_a_t4
    assert len(skipped) == 2 and all("detrlib @ git+" in source for source in skipped)
    chapter4, chapter7 = outputs["04_training"], outputs["07_mixed_precision"]
    t4 = "Tesla T4: fp16 + GradScaler; bf16 only emulated"
    for text in (chapter4, chapter7):
        assert f"precision    {t4}" in text and "settings     profile gpu: resnet50" in text
        assert "Traceback" not in text and "Error" not in text
    assert f"this machine trains in {t4}" in chapter4 and "expected: about" in chapter4
    assert "no T4 measurement in http://127.0.0.1:" in chapter4  # none committed yet: the estimate, said so
    runs = work / "drive" / "MyDrive" / "detrlib" / "runs"
    assert str(runs) in chapter4 or "MyDrive/detrlib/runs" in chapter4
    assert [json.loads(line)["mountpoint"] for line in (work / "drive" / "mounts.jsonl").read_text().splitlines()] \
        and list(runs.glob("gpu-*/metrics.jsonl"))  # chapter 4's run lives on the mounted Drive
    assert all(json.loads(metrics.read_text().splitlines()[-1])["step"] == 2  # DETRLIB_SET's train.max_steps
               for metrics in runs.glob("gpu-*/metrics.jsonl"))
    assert "train.amp='auto'" in chapter7 and "No GPU measurement" in chapter7
