"""Mixed precision: the model runs in the low precision, matching and losses stay in fp32, peak
memory is counted, and every step of a run is logged."""
import mmap

import pytest
import torch

import detrlib.precision
from detrlib.config import ConfigError, get_profile
from detrlib.criterion import build_criterion
from detrlib.engine import train
from detrlib.precision import autocast, precision
from detrlib.memory import peak_memory_mb, reset_peak_memory
from detrlib.model import build_model
from detrlib.runfolder import read_metrics, read_steps

CPU = torch.device("cpu")


def test_amp_setting_picks_bf16_on_a_cpu_that_has_it_and_refuses_unknown_values(monkeypatch):
    assert precision("off", CPU).dtype is None
    monkeypatch.setattr(detrlib.precision, "cpu_has_bf16", lambda: True)
    assert precision("auto", CPU).dtype == torch.bfloat16 and not precision("auto", CPU).warning
    monkeypatch.setattr(detrlib.precision, "cpu_has_bf16", lambda: False)  # emulated bf16 would be slower than fp32
    assert precision("auto", CPU).dtype is None and "only emulated" in precision("auto", CPU).why
    assert precision("bf16", CPU).dtype == torch.bfloat16 and "emulated" in precision("bf16", CPU).warning
    fp16 = precision("fp16", CPU)
    assert fp16.dtype == torch.float16 and fp16.scaler
    assert fp16.warning.startswith("warning: train.amp=fp16 on a CPU") and "\n" not in fp16.warning
    with pytest.raises(ConfigError, match="train.amp must be one of off, auto, bf16, fp16"):  # checked once, here
        get_profile("smoke").replace(**{"train.amp": "half"})


def test_matching_and_losses_stay_in_fp32_under_autocast():
    cfg = get_profile("smoke")
    model, criterion = build_model(cfg.model), build_criterion(cfg)
    costs = []
    original = criterion.matcher.weigh
    criterion.matcher.weigh = lambda terms: costs.append(original(terms)) or costs[-1]
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3]]), "labels": torch.tensor([1])}] * 2
    with autocast(CPU, torch.bfloat16):
        outputs = model(torch.randn(2, 3, 64, 64))
    losses = criterion(outputs, targets)
    assert outputs["pred_logits"].dtype == torch.bfloat16
    assert costs and all(c.dtype == torch.float32 for c in costs)
    assert all(v.dtype == torch.float32 for v in losses.values())


def test_cpu_training_attention_runs_in_fp32_under_bf16_autocast(monkeypatch):
    """The CPU attention kernel's bf16 backward is slow, so a training pass computes attention in
    fp32 from the bf16 projections and hands bf16 on; inference keeps the bf16 kernel."""
    from detrlib.model.attention import Attention

    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda q, k, v, **kw: seen.append(q.dtype) or sdpa(q, k, v, **kw))
    torch.manual_seed(0)
    attention = Attention(32, 4)
    x = torch.randn(2, 9, 32, requires_grad=True)
    padding = torch.zeros(2, 9, dtype=torch.bool)
    padding[1, -3:] = True
    with autocast(CPU, torch.bfloat16):
        out, _ = attention(x, x, x, key_padding_mask=padding)
        with torch.no_grad():
            attention(x, x, x, key_padding_mask=padding)
    assert seen == [torch.float32, torch.bfloat16]
    assert out.dtype == torch.bfloat16
    with torch.no_grad():
        reference, _ = attention(x, x, x, key_padding_mask=padding)  # all fp32
    torch.testing.assert_close(out.float(), reference, atol=0.05, rtol=0.05)
    out.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_peak_memory_counts_an_allocation_and_resets():
    reset_peak_memory(CPU)
    if peak_memory_mb(CPU) is None:
        pytest.skip("no /proc/self/status here")
    # 64 MiB of pages the process never had (an allocator may serve a tensor from freed memory it still
    # holds, which the peak rightly does not count), touched
    block = mmap.mmap(-1, 64 * 2**20)
    torch.frombuffer(block, dtype=torch.uint8).fill_(1)
    peak = peak_memory_mb(CPU)
    block.close()
    reset_peak_memory(CPU)
    assert peak_memory_mb(CPU) < peak - 32


@pytest.mark.slow
def test_a_bf16_run_logs_every_step_and_its_peak_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("DETRLIB_HOME", str(tmp_path))
    cfg = get_profile("smoke").replace(**{"train.amp": "bf16", "train.max_steps": 3})
    out = train(cfg, tmp_path / "run", progress=False)
    steps = read_steps(out)
    assert steps["step"] == [1.0, 2.0, 3.0] and all(s > 0 for s in steps["seconds"])
    assert all(torch.isfinite(torch.tensor(steps["loss"])))
    assert read_metrics(out)[-1]["peak_memory_mb"] > 0


@pytest.mark.slow
def test_the_benchmark_training_step_runs_in_each_precision_from_the_same_start():
    """Chapter 7 times fp32 against AMP with this step, taking turns: both must start from the same
    weights, and the low-precision step must really run the model in its dtype."""
    from detrlib.bench import random_batch
    from detrlib.bench.step import detrlib_step

    cfg = get_profile("smoke")
    batch = random_batch(2, 64, cfg.model.num_classes)
    first = {}
    for name, dtype in {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}.items():
        step = detrlib_step(cfg, *batch, dtype=dtype)
        losses = [step() for _ in range(5)]
        assert all(torch.isfinite(torch.tensor(losses))), f"{name}: {losses}"
        assert losses[-1] < losses[0], f"{name}: five steps on one batch must lower its loss: {losses}"
        first[name] = losses[0]
    for name in ("bf16", "fp16"):
        assert first[name] != first["fp32"], f"{name} gave fp32's loss bit for bit: autocast did not run"
        assert abs(first[name] - first["fp32"]) < 0.05 * first["fp32"], "not the same starting weights"
