"""On a CUDA GPU (``scripts/gpu_check.sh`` runs these; without CUDA they are skipped): an fp16 step
with a GradScaler (a T4's mixed precision), a bf16 step, and a run that stops and resumes on the GPU."""
import pytest
import torch

from detrlib import engine, precision
from detrlib.bench import random_batch
from detrlib.checkpoint import list_checkpoints, load_checkpoint, load_latest
from detrlib.config import profile_settings
from detrlib.criterion import build_criterion
from detrlib.model import build_model

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh)")]
CUDA = torch.device("cuda")


def batches(n: int, cfg):
    return [engine.to_device(*random_batch(2, 64, cfg.model.num_classes, objects=(1,), seed=i), CUDA) for i in range(n)]


@pytest.mark.parametrize("amp", ["fp16", "bf16"], ids=["fp16+GradScaler", "bf16"])
def test_a_mixed_precision_training_step_on_the_gpu(amp):
    if amp == "bf16" and not precision.cuda_has_bf16(CUDA):
        pytest.skip("this GPU computes in bf16 only by emulation")
    cfg = profile_settings("smoke").replace(**{"train.amp": amp, "train.max_steps": 0})
    torch.manual_seed(0)
    model = build_model(cfg.model).to(CUDA)
    criterion = build_criterion(cfg).to(CUDA)
    state = engine.new_train_state(model, cfg.train, steps_per_epoch=8)
    assert (state.scaler is not None) == (amp == "fp16")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    means = engine.train_one_epoch(state, criterion, batches(8, cfg), cfg.train, progress=False)
    assert state.step + means["skipped"] == 8 and state.step >= 4  # the scaler may skip a few overflowing fp16 steps
    assert all(torch.isfinite(torch.tensor(row[1])) for row in state.steps)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    dtype = precision.precision(amp, CUDA).dtype
    with precision.autocast(CUDA, dtype):
        outputs = model(batches(1, cfg)[0][0])
    assert outputs["pred_logits"].dtype == dtype


def test_a_run_stopped_on_the_gpu_resumes_where_it_stopped(tmp_path, monkeypatch):
    cfg = profile_settings("smoke").replace(**{"train.device": "cuda", "train.max_steps": 0, "train.epochs": 2,
                                               "train.checkpoint_every": 3, "train.keep_last": 100})
    whole = engine.train(cfg, tmp_path / "whole", progress=False)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the session ends at the first evaluation

    with monkeypatch.context() as m:
        m.setattr(engine, "evaluate_model", killed)
        with pytest.raises(KeyboardInterrupt):
            engine.train(cfg, tmp_path / "stopped", progress=False)
    assert not load_latest(tmp_path / "stopped" / "checkpoints")["finished"]
    again = engine.train(cfg, tmp_path / "stopped", progress=False)
    a = load_checkpoint(list_checkpoints(whole / "checkpoints")[-1])
    b = load_checkpoint(list_checkpoints(again / "checkpoints")[-1])
    assert a["step"] == b["step"] == 12 and b["finished"]
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], atol=1e-5, rtol=1e-4)
