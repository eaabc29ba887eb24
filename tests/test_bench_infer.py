"""Inference and GPU benchmarks: what they time and how (speed itself is not tested)."""
import argparse

import pytest
import torch

from detrlib.bench import load_all, take_turns
from detrlib.bench.gpu import training_speed
from detrlib.bench.infer import inference_seconds_per_image, parse_config
from detrlib.config import get_profile
from detrlib.model import build_model


def parse(name, argv):
    parser = argparse.ArgumentParser()
    load_all()[name].add_arguments(parser)
    return parser.parse_args(argv)


def test_configurations_are_decoder_layers_by_queries():
    assert parse_config("4x50") == (4, 50)
    for bad in ("4-50", "0x50", "4x"):
        with pytest.raises(ValueError, match="DECODER_LAYERSxQUERIES"):
            parse_config(bad)


def test_jobs_warm_up_untimed_then_take_turns():
    calls = []
    times = take_turns({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=2,
                       device=torch.device("cpu"))
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert set(times) == {"a", "b"} and all(0 <= t < 1 for t in times.values())


def test_inference_seconds_per_image_runs_in_eval_mode_under_autocast():
    model = build_model(get_profile("smoke").model).train()
    dtypes = []
    model.class_embed.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    s = inference_seconds_per_image(model, 64, batch=2, dtype=torch.bfloat16, repeats=2, warmup=1)
    assert s > 0 and not model.training and set(dtypes) == {torch.bfloat16}


def test_infer_benchmark_has_a_row_per_configuration_size_batch_and_precision(capsys):
    args = parse("infer", ["--profile", "smoke", "--configs", "3x16", "2x8", "--sizes", "64", "--batches", "1", "2",
                           "--precision", "fp32", "bf16", "--repeats", "2", "--warmup", "1"])
    rows = load_all()["infer"].run(args)
    assert len(rows) == 2 * 2 * 2
    assert {r["decoder x queries"] for r in rows} == {"3x16", "2x8"}
    assert all(r["s/image"] > 0 for r in rows)
    assert [r["vs first"] for r in rows if r["decoder x queries"] == "3x16"] == [1.0] * 4
    assert "smoke profile model" in capsys.readouterr().out


def test_gpu_benchmark_says_so_and_measures_nothing_without_cuda(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert load_all()["gpu"].run(parse("gpu", [])) == []
    assert "no CUDA device" in capsys.readouterr().out


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_training_speed_takes_the_engines_step(amp):
    cfg = get_profile("smoke").replace(**{"train.amp": amp})
    result = training_speed(cfg, torch.device("cpu"), size=64, batch=2, steps=2, warmup=1)
    assert result["steps/s"] > 0 and torch.isfinite(torch.tensor(result["loss"]))
    assert result["peak MiB"] is None or result["peak MiB"] > 0


def test_every_benchmark_sets_its_threads_for_its_run_only(monkeypatch):
    import argparse

    import torch

    from detrlib import bench

    monkeypatch.setattr(bench, "BENCHMARKS", {})
    seen = []
    run = bench.benchmark("probe", "records torch's threads")(lambda args: seen.append(torch.get_num_threads()) or [])
    before = torch.get_num_threads()
    assert run(argparse.Namespace(threads=1)) == [] and seen == [1]
    assert torch.get_num_threads() == before and bench.BENCHMARKS["probe"].run is run
    run(argparse.Namespace())  # no --threads option: torch's setting stays
    assert seen == [1, before]
