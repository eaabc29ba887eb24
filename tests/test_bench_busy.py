"""``--busy N``: benchmarks measured next to N processes spinning on the CPU, which always stop."""
import argparse
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

import detrlib.bench as bench
from detrlib.bench import benchmark, busy_neighbours, take_turns_quiet_and_busy

ROOT = Path(__file__).resolve().parents[1]


def running(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_neighbours_spin_inside_the_block_and_are_gone_after():
    with busy_neighbours(2) as pids:
        assert len(pids) == 2 and all(running(pid) for pid in pids)
        time.sleep(0.5)
        assert all(cpu_seconds(pid) > 0.05 for pid in pids)  # they burn CPU, they do not sleep
    assert not any(running(pid) for pid in pids)


def test_neighbours_stop_on_an_error_and_on_ctrl_c():
    for error in (RuntimeError, KeyboardInterrupt):
        with pytest.raises(error), busy_neighbours(1) as pids:
            raise error
        assert not running(pids[0])


def test_no_neighbours_starts_nothing():
    with busy_neighbours(0) as pids:
        assert pids == []


def test_a_neighbour_stops_by_itself_when_its_benchmark_dies():
    script = ("import os\nfrom detrlib.bench import busy_neighbours\n"
              "with busy_neighbours(1) as pids:\n    print(pids[0], flush=True)\n    os._exit(0)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True).stdout
    pid = int(out)
    deadline = time.monotonic() + 30
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(pid)


def test_take_turns_times_every_job_quiet_and_busy_turn_by_turn(monkeypatch):
    state = {"busy": 0}
    log = []

    @contextmanager
    def fake_neighbours(n):
        state["busy"] = n
        yield []
        state["busy"] = 0

    monkeypatch.setattr(bench, "busy_neighbours", fake_neighbours)
    jobs = {name: (lambda name=name: log.append((name, state["busy"]))) for name in ("a", "b")}
    quiet, busy = take_turns_quiet_and_busy(jobs, repeats=2, busy=3, warmup=1)
    assert set(quiet) == set(busy) == {"a", "b"}
    assert all(t >= 0 for t in [*quiet.values(), *busy.values()])
    # warm-up, then each turn: every job alone, then every job next to 3 neighbours
    assert log == [("a", 0), ("b", 0)] + [("a", 0), ("b", 0), ("a", 3), ("b", 3)] * 2
    log.clear()
    quiet, busy = take_turns_quiet_and_busy(jobs, repeats=2, busy=0, warmup=0)
    assert set(quiet) == {"a", "b"} and busy == {} and log == [("a", 0), ("b", 0)] * 2


def test_every_benchmark_takes_busy_and_runs_next_to_the_neighbours(monkeypatch):
    seen = []

    @contextmanager
    def fake_neighbours(n):
        seen.append(n)
        yield []

    monkeypatch.setattr(bench, "busy_neighbours", fake_neighbours)
    try:
        run = benchmark("_test_busy", "a benchmark of this test")(lambda args: [{"busy": seen[-1]}])
        measures = benchmark("_test_measures_busy", "another", measures_busy=True)(lambda args: [{"busy": args.busy}])
        for name in ("_test_busy", "_test_measures_busy"):
            parser = argparse.ArgumentParser()
            bench.BENCHMARKS[name].add_arguments(parser)
            assert parser.parse_args([]).busy == 0
        parser = argparse.ArgumentParser()
        bench.BENCHMARKS["_test_busy"].add_arguments(parser)
        assert run(parser.parse_args(["--busy", "2"])) == [{"busy": 2}]
        # a benchmark that measures quiet and busy itself gets --busy, and no neighbours around it
        assert measures(argparse.Namespace(busy=2)) == [{"busy": 2}] and seen[-1] == 0
    finally:
        bench.BENCHMARKS.pop("_test_busy", None)
        bench.BENCHMARKS.pop("_test_measures_busy", None)


def step_rows(*extra):
    entry = bench.load_all()["step"]
    parser = argparse.ArgumentParser()
    entry.add_arguments(parser)
    return entry.run(parser.parse_args(["--profile", "quick", "--batch", "2", "--size", "64", "--repeats", "1",
                                        "--threads", "1", "--objects", "1", "3", *extra]))


def test_step_benchmark_reports_quiet_and_busy_in_one_run():
    rows = step_rows("--busy", "1", "--no-hf", "--dn", "--dn-groups", "2")
    assert [r["dn_groups"] for r in rows] == [0, 2]
    for r in rows:
        assert r["detrlib s/step"] > 0 and r["busy s/step"] > 0
        assert r["busy/quiet"] == pytest.approx(r["busy s/step"] / r["detrlib s/step"])


def test_step_benchmark_times_the_steps_in_the_precision_a_cpu_run_trains_in(monkeypatch):
    import detrlib.precision

    assert {r["precision"] for r in step_rows("--no-hf")} == {"fp32"}
    monkeypatch.setattr(detrlib.precision, "cpu_has_bf16", lambda: True)
    rows = step_rows("--no-hf", "--amp")
    assert {r["precision"] for r in rows} == {"bf16"} and all(r["detrlib s/step"] > 0 for r in rows)
    monkeypatch.setattr(detrlib.precision, "cpu_has_bf16", lambda: False)  # emulated bf16 is slower: auto keeps fp32
    assert {r["precision"] for r in step_rows("--no-hf", "--amp")} == {"fp32"}


def test_step_benchmark_runs_hugging_face_of_the_same_shape():
    pytest.importorskip("transformers")
    pytest.importorskip("timm")
    from detrlib.bench.step import hf_config
    from detrlib.config import get_profile

    model = get_profile("quick").model
    hf, why = bench.hf_detr(**hf_config(model))
    assert why == "" and hf.config.num_queries == model.num_queries and hf.config.d_model == model.hidden_dim
    assert hf.config.num_labels == model.num_classes and hf.config.decoder_layers == model.dec_layers
    row = step_rows("--busy", "1")[0]
    assert row["HF s/step"] > 0 and row["HF busy/quiet"] == pytest.approx(row["HF busy s/step"] / row["HF s/step"])
