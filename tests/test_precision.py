"""One precision rule (:mod:`detrlib.precision`), asked by training, the benchmarks, chapter 7 and
the environment report: bf16 only where the device computes in it natively, fp16 with a GradScaler
on older GPUs such as the T4 (where torch says bf16 is supported: emulated), fp32 with amp=off.
Checked on faked GPUs (``fake_gpu``); and CUDA runs are set up as ``bench gpu`` measures them."""
import json
import re
from types import SimpleNamespace

import pytest
import torch

from book_layout import ROOT
from detrlib import budget, engine
from detrlib.config import profile_settings
from detrlib.environment import environment_report
from detrlib.precision import precision
from fake_gpu import patches

CUDA = torch.device("cuda")


@pytest.fixture
def fake_gpu(monkeypatch):
    def install(name):
        for attribute, fake in patches(name).items():
            monkeypatch.setattr(torch.cuda, attribute, fake)
        monkeypatch.setattr("detrlib.config.has_cuda", lambda: True)
    return install


def test_a_t4_trains_in_fp16_with_a_scaler_though_torch_says_it_supports_bf16(fake_gpu):
    fake_gpu("Tesla T4")
    assert torch.cuda.is_bf16_supported()  # torch's answer on a T4: bf16 by emulation
    t4 = precision("auto", CUDA)
    assert (t4.dtype, t4.scaler, t4.name, t4.warning) == (torch.float16, True, "fp16 + GradScaler", "")
    assert t4.why == "Tesla T4: fp16 + GradScaler; bf16 only emulated (compute capability 7.5, below 8.0)"
    gpu = profile_settings("gpu")
    report = environment_report(gpu)
    assert "device       cuda: Tesla T4, 15 GiB, compute capability 7.5" in report
    assert f"precision    {t4.why}" in report
    plan = budget.chapter_plan("04_training", gpu)
    assert plan.splitlines()[0] == f"this machine trains in {t4.why}"
    forced = precision("bf16", CUDA)  # forcing bf16 on a T4 works, slowly, and says so in one line
    assert forced.dtype == torch.bfloat16 and not forced.scaler
    assert "only emulated" in forced.warning and "train.amp=auto" in forced.warning and "\n" not in forced.warning
    assert precision("fp16", CUDA).scaler and precision("off", CUDA).dtype is None


@pytest.mark.parametrize("name,capability", [("NVIDIA A100-SXM4-40GB", "8.0"), ("NVIDIA H100 80GB HBM3", "9.0")])
def test_compute_capability_8_and_later_trains_in_bf16(fake_gpu, name, capability):
    fake_gpu(name)
    native = precision("auto", CUDA)
    assert (native.dtype, native.scaler, native.warning) == (torch.bfloat16, False, "")
    assert native.why == f"{name}: bf16 (compute capability {capability} computes in it natively)"
    assert precision("fp16", CUDA).scaler and not precision("fp16", CUDA).warning  # fp16 is native there too
    assert f"this machine trains in {native.why}" in budget.chapter_plan("05_denoising", profile_settings("gpu"))


def test_training_builds_a_grad_scaler_exactly_when_the_rule_says_fp16():
    from detrlib.model import build_model

    cfg = profile_settings("smoke")
    model = build_model(cfg.model)
    for amp in ("off", "auto", "bf16", "fp16"):
        state = engine.new_train_state(model, cfg.train.__class__(**{**vars(cfg.train), "amp": amp}), 4)
        assert (state.scaler is not None) == precision(amp, "cpu").scaler


def test_nothing_asks_torch_whether_bf16_is_supported_but_the_rule():
    """``torch.cuda.is_bf16_supported()`` says True on a T4: code and chapters ask the rule instead."""
    def code(path):  # a chapter's code cells; its prose may warn about the function
        text = path.read_text()
        return "".join(re.findall(r"```\{code-cell\}.*?```", text, re.S)) if path.suffix == ".md" else text

    sources = [*(ROOT / "detrlib").rglob("*.py"), *(ROOT / "book").glob("*.md"), *(ROOT / "scripts").glob("*.py")]
    askers = [p.relative_to(ROOT) for p in sources if "is_bf16_supported" in code(p) and p.name != "precision.py"]
    assert askers == []
    chapter7 = (ROOT / "book" / "07_mixed_precision.md").read_text()
    assert 'precision("auto", device)' in chapter7 and "from detrlib.precision import precision" in chapter7


def test_deterministic_runs_fix_the_cublas_workspace(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    engine.seed_everything(0)
    settings = engine.deterministic_settings()
    assert settings == {"deterministic_algorithms": True, "cudnn_benchmark": False,
                        "CUBLAS_WORKSPACE_CONFIG": engine.CUBLAS_WORKSPACE}
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # a user's own setting is kept
    engine.seed_everything(0)
    assert engine.deterministic_settings()["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_bench_gpu_times_with_the_settings_train_uses_and_writes_them(fake_gpu, monkeypatch, tmp_path):
    import detrlib.bench.gpu as bench_gpu

    fake_gpu("Tesla T4")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.use_deterministic_algorithms(False)
    seen = {}

    def measure(args):  # nothing runs on a fake GPU: record what the timed steps would see
        seen.update(engine.deterministic_settings())
        return [{"config": "R50 6/4/50 DN5", "profile": "gpu", "precision": "amp fp16 + GradScaler",
                 "train steps/s": 2.0}]

    monkeypatch.setattr(bench_gpu, "measure", measure)
    out = tmp_path / "gpu-t4.json"
    bench_gpu.run(SimpleNamespace(out=str(out), argv=["bench", "gpu", "--out", str(out)]))
    written = json.loads(out.read_text())
    assert seen == written["settings"] == {"deterministic_algorithms": True, "cudnn_benchmark": False,
                                           "CUBLAS_WORKSPACE_CONFIG": engine.CUBLAS_WORKSPACE}
    assert written["gpu"] == "Tesla T4" and written["rows"][0]["precision"] == "amp fp16 + GradScaler"
    assert budget.measured_step_seconds("gpu", tmp_path) == pytest.approx(0.5)


def test_every_page_quotes_the_one_t4_derivation():
    """budget.py derives a T4's seconds per step once; the README and the chapters quote it through
    the generated table or a cell's output, never a number of their own."""
    pages = [ROOT / "README.md", *(ROOT / "book").glob("*.md")]
    stated = re.compile(r"\d+(\.\d+)?\s*(s|seconds|V100-seconds)\s*(per|/|a)\s*(training\s+)?(step|image)"
                        r"|\d+(\.\d+)?\s*(to\s*[\d.]+\s*)?(times|x)\s+(a|the)\s+V100", re.I)
    found = []
    for page in pages:
        prose = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code cells compute, they do not state
        for sentence in re.split(r"(?<=[.!?])\s+", prose):
            if re.search(r"\b(T4|V100|A100)\b", sentence) and stated.search(sentence):
                found.append(f"{page.name}: {sentence.strip()[:120]}")
    assert found == [], "a page states a GPU's seconds per step or image: quote detrlib.budget instead"
    assert budget.estimated_step_seconds(profile_settings("gpu")) == pytest.approx(
        budget.V100_IMAGE_SECONDS * budget.pixel_share((480, 512, 544, 576, 608, 640)) * 4 / budget.SPEED_VS_V100["T4"])
