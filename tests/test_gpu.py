"""On a CUDA GPU (``scripts/gpu_check.sh`` runs these; without CUDA they are skipped): an fp16 step
with a GradScaler (a T4's mixed precision), a bf16 step, and a run that stops and resumes on the GPU."""
import pytest
import torch

from detrlib import engine
from detrlib.checkpoint import list_checkpoints, load_checkpoint, load_latest
from detrlib.config import profile_settings
from detrlib.criterion import build_criterion
from detrlib.model import build_model

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh)")]
CUDA = torch.device("cuda")


def batches(n: int, cfg):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        images = torch.randn(2, 3, 64, 64, generator=g)
        targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.3, 0.4]]),
                    "labels": torch.randint(0, cfg.model.num_classes, (1,), generator=g)} for _ in range(2)]
        out.append(engine.to_device(images, torch.zeros(2, 64, 64, dtype=torch.bool), targets, CUDA))
    return out


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16+GradScaler", "bf16"])
def test_a_mixed_precision_training_step_on_the_gpu(dtype):
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    cfg = profile_settings("smoke")
    torch.manual_seed(0)
    model = build_model(cfg.model).to(CUDA)
    criterion = build_criterion(cfg).to(CUDA)
    optimizer = engine.make_optimizer(model, cfg.train)
    scheduler = engine.make_scheduler(optimizer, cfg.train, steps_per_epoch=8)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    before = {k: v.clone() for k, v in model.state_dict().items()}
    log = []
    means, steps = engine.train_one_epoch(model, criterion, batches(8, cfg), optimizer, scheduler, CUDA, dtype=dtype,
                                          scaler=scaler, progress=False, pass_targets=True, step_log=log)
    assert steps + means["skipped"] == 8 and steps >= 4  # the scaler may skip a few overflowing fp16 steps
    assert all(torch.isfinite(torch.tensor(row[1])) for row in log)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    with engine.autocast(CUDA, dtype):
        outputs = model(batches(1, cfg)[0][0])
    assert outputs["pred_logits"].dtype == dtype


def test_a_run_stopped_on_the_gpu_resumes_where_it_stopped(tmp_path, monkeypatch):
    cfg = profile_settings("smoke").replace(**{"train.device": "cuda", "train.max_steps": 0, "train.epochs": 2,
                                               "train.checkpoint_every": 3, "train.keep_last": 100})
    whole = engine.train(cfg, tmp_path / "whole", progress=False)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the session ends at the first evaluation

    with monkeypatch.context() as m:
        m.setattr(engine, "evaluate", killed)
        with pytest.raises(KeyboardInterrupt):
            engine.train(cfg, tmp_path / "stopped", progress=False)
    assert not load_latest(tmp_path / "stopped" / "checkpoints")["finished"]
    again = engine.train(cfg, tmp_path / "stopped", progress=False)
    a = load_checkpoint(list_checkpoints(whole / "checkpoints")[-1])
    b = load_checkpoint(list_checkpoints(again / "checkpoints")[-1])
    assert a["step"] == b["step"] == 12 and b["finished"]
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], atol=1e-5, rtol=1e-4)
