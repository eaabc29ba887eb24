"""Two gloo processes on the CPU agree on every decision that ends or skips a step: clocks that run
at different speeds, a non-finite loss on one process only, a process killed mid-run, a run resumed
with another number of processes. Each run ends, in bounded time, with one line per process.

The processes are started as a launcher without torchrun's agent would (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT): no agent ends the others when one dies, so detrlib itself must.
``distributed_child.py`` gives one process its fast clock or its NaN.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from detrlib import cli
from detrlib.checkpoint import list_checkpoints, load_checkpoint
from detrlib.config import get_profile
from detrlib.data import data_root
from detrlib.runfolder import read_metrics

ROOT = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).with_name("distributed_child.py")
SMOKE = ["train", "--profile", "smoke", "--max-steps", "0"]  # 24 images, 2 x 4 a step: 3 steps an epoch
TIMEOUT = 120  # seconds a run may take before the test fails; each takes about 10 on 2 idle cores

pytestmark = pytest.mark.slow


@dataclass
class Run:
    codes: list[int]
    stdout: list[str]
    stderr: list[str]

    def last_lines(self) -> list[str]:
        return [err.rstrip("\n").rsplit("\n", 1)[-1] for err in self.stderr]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tmp: Path, home: Path, args: list[str], hooks: dict | None = None) -> list:
    """Two processes of ``python -m detrlib ARGS``, their output in files under ``tmp``."""
    env = {**os.environ, "DETRLIB_HOME": str(home), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "DETRLIB_PROFILE": "smoke", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
           "WORLD_SIZE": "2"}
    tmp.mkdir(parents=True, exist_ok=True)
    procs = []
    for rank in range(2):
        out, err = (open(tmp / f"{name}{rank}.txt", "w+") for name in ("out", "err"))
        procs.append((subprocess.Popen([sys.executable, str(CHILD), json.dumps(hooks or {}), *args], stdout=out,
                                       stderr=err, text=True, env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}),
                      out, err))
    return procs


def finish(procs, started: float) -> Run:
    try:
        codes = [p.wait(timeout=max(1, started + TIMEOUT - time.perf_counter())) for p, _, _ in procs]
    finally:  # a run that hangs fails the test, and leaves no process behind
        for p, _, _ in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    texts = []
    for _, *files in procs:
        for f in files:
            f.seek(0)
            texts.append(f.read())
            f.close()
    return Run(codes, texts[0::2], texts[1::2])


def launch(tmp: Path, home: Path, args: list[str], hooks: dict | None = None) -> Run:
    started = time.perf_counter()
    return finish(start(tmp, home, args, hooks), started)


def in_process(capsys, *args: str) -> tuple[int, str, str]:
    """``python -m detrlib ARGS`` in this process (one process, and no second start of Python):
    exit code, output, last line of the errors."""
    capsys.readouterr()
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err.rstrip("\n").rsplit("\n", 1)[-1]


def evaluates(run: Path, capsys) -> dict:
    """The metrics ``eval`` finds for the run's final checkpoint (it must read it)."""
    code, out, _ = in_process(capsys, "eval", "--checkpoint", str(run), "--json")
    assert code == 0
    return json.loads(out)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """DETRLIB_HOME, with the smoke profile's toy VOC made once, before any process needs it."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DETRLIB_HOME", str(home))
        data_root(get_profile("smoke").data)
    return home


@pytest.fixture(autouse=True)
def data_home(home, monkeypatch):
    monkeypatch.setenv("DETRLIB_HOME", str(home))


@pytest.fixture(scope="module")
def nan_run(home, tmp_path_factory):
    """Two processes, one epoch, the second batch's loss NaN on process 1 only."""
    tmp = tmp_path_factory.mktemp("nan")
    return launch(tmp, home, [*SMOKE, "--epochs", "1", "--out", str(tmp / "run")], hooks={"1": {"nan_at": 2}}), tmp / "run"


def test_clocks_that_disagree_stop_every_process_at_the_same_step(tmp_path, home, capsys):
    # process 1's clock runs 1000 times faster: its one-minute cap passes at its first batch, process 0's never
    run = launch(tmp_path, home, [*SMOKE, "--epochs", "4", "--max-minutes", "1", "--out", str(tmp_path / "run")],
                 hooks={"1": {"clock": 1000}})
    assert run.codes == [0, 0], run.stderr
    last = read_metrics(tmp_path / "run")[-1]
    assert last["stopped"] == "max_minutes" and last["step"] < 12 and last["epoch"] == 0
    state = load_checkpoint(list_checkpoints(tmp_path / "run" / "checkpoints")[-1])
    assert state["finished"] and state["step"] == last["step"] and state["processes"] == 2
    assert {"AP50", "AP"} <= set(evaluates(tmp_path / "run", capsys))


def test_a_non_finite_loss_on_one_process_is_skipped_by_both(nan_run, capsys):
    run, out = nan_run
    assert run.codes == [0, 0], run.stderr
    (last,) = read_metrics(out)
    assert last["skipped"] == 1 and last["step"] == 2 and last["stopped"] == "epochs"
    assert {"AP50", "AP"} <= set(evaluates(out, capsys))


def test_a_killed_process_ends_the_other_with_one_line_and_the_run_resumes(tmp_path, home, capsys):
    out = tmp_path / "run"
    started = time.perf_counter()
    procs = start(tmp_path, home, [*SMOKE, "--epochs", "30", "--checkpoint-every", "1", "--out", str(out)])
    while not (out / "checkpoints" / "ckpt-00000002.pt").exists():
        assert all(p.poll() is None for p, _, _ in procs) and time.perf_counter() < started + TIMEOUT, "no checkpoint"
        time.sleep(0.01)
    procs[1][0].send_signal(signal.SIGKILL)
    killed = time.perf_counter()
    run = finish(procs, started)
    assert run.codes == [1, -signal.SIGKILL]
    assert time.perf_counter() - killed < 30, "the surviving process did not end promptly"
    assert run.last_lines()[0].startswith("python -m detrlib train: process 0 of 2 stopped: another process of the "
                                          "run ended or stopped answering (its own message says why)"), run.stderr[0]
    assert "Traceback" not in run.stderr[0]
    steps = [int(p.stem.split("-")[1]) for p in list_checkpoints(out / "checkpoints")]
    assert steps and max(steps) < 90

    resumed = launch(tmp_path / "again", home, [*SMOKE, "--epochs", "30", "--max-steps", str(max(steps) + 2),
                                                "--out", str(out), "--resume"])
    assert resumed.codes == [0, 0], resumed.stderr
    assert f"resumed from {out}/checkpoints/ckpt-{max(steps):08d}.pt" in resumed.stdout[0]
    assert read_metrics(out)[-1]["step"] == max(steps) + 2 and read_metrics(out)[-1]["stopped"] == "max_steps"
    assert {"AP50", "AP"} <= set(evaluates(out, capsys))


def test_a_run_resumed_with_another_number_of_processes_says_what_it_needs(nan_run, tmp_path, home, capsys):
    two = shutil.copytree(nan_run[1], tmp_path / "two")
    code, _, last = in_process(capsys, *SMOKE, "--epochs", "2", "--out", str(two), "--resume")
    assert code == 1 and last == (
        f"python -m detrlib train: {two} was trained by 2 processes and this command runs 1: resume it with 2 "
        "(torchrun --nproc_per_node 2 -m detrlib train ... --resume), so that its batches and schedule go on as they began")
    code, out, _ = in_process(capsys, *SMOKE, "--epochs", "1", "--out", str(two), "--resume")
    assert code == 0 and "finished at step 2, stopped by train.epochs=1" in out  # nothing to train: reused

    one = tmp_path / "one"
    assert in_process(capsys, *SMOKE, "--epochs", "1", "--out", str(one))[0] == 0
    both = launch(tmp_path / "both", home, [*SMOKE, "--epochs", "2", "--out", str(one), "--resume"])
    assert both.codes == [1, 1]
    assert all(line.endswith(f"{one} was trained by 1 process and this command runs 2: resume it with 1 (python -m "
                             "detrlib train, without torchrun ... --resume), so that its batches and schedule go on "
                             "as they began") for line in both.last_lines()), both.stderr
