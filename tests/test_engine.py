"""Training runs: resuming after SIGKILL, two processes against one, NaN losses, the optimizer set-up."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from detrlib.checkpoint import list_checkpoints, load_checkpoint
from detrlib.config import TrainConfig, get_profile
from detrlib.engine import NAN_PATIENCE, agree, make_optimizer, make_scheduler, set_learning_rates, train_one_epoch
from detrlib.runfolder import read_steps
from detrlib.train_state import EpochTotals, TrainState

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["--profile", "smoke", "--set", "train.keep_last=100"]


def cli_env(home: Path) -> dict:
    return {**os.environ, "DETRLIB_HOME": str(home), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
            "DETRLIB_PROFILE": "smoke"}


def detrlib(*args, env, **kwargs):
    return subprocess.run([sys.executable, "-m", "detrlib", *args], env=env, capture_output=True, text=True,
                          check=True, **kwargs)


def final_weights(out: Path) -> dict:
    return load_checkpoint(list_checkpoints(out / "checkpoints")[-1])["model"]


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_to_bit_identical_weights(tmp_path):
    env = cli_env(tmp_path / "home")
    args = ["train", *SMOKE, "--epochs", "3", "--max-steps", "0", "--checkpoint-every", "2"]  # 3 x 6 steps
    detrlib(*args, "--out", str(tmp_path / "whole"), env=env)

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "detrlib", *args, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out / "checkpoints" / "ckpt-00000008.pt").exists():  # two steps into epoch 2
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    steps_at_kill = [p.name for p in list_checkpoints(out / "checkpoints")]
    assert "ckpt-00000018.pt" not in steps_at_kill

    resumed = detrlib(*args, "--out", str(out), "--resume", env=env)
    assert "resumed from" in resumed.stdout
    whole, again = final_weights(tmp_path / "whole"), final_weights(out)
    assert whole.keys() == again.keys()
    assert all(torch.equal(whole[k], again[k]) for k in whole), "resumed weights differ from the uninterrupted run"
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    steps, whole_steps = read_steps(out), read_steps(tmp_path / "whole")
    assert steps["step"] == [float(s) for s in range(1, 19)] and steps["loss"] == whole_steps["loss"]
    whole_history = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    train_terms = [k for k in history[1] if k.startswith("train_") and k != "train_time_s"]
    assert train_terms and [[h[k] for k in train_terms] for h in history] == \
        [[h[k] for k in train_terms] for h in whole_history]  # epoch 2 averages the steps before the kill too


@pytest.mark.slow
def test_a_finished_run_is_reused_and_a_larger_budget_trains_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DETRLIB_HOME", str(tmp_path))
    from detrlib.engine import train
    from detrlib.runfolder import read_metrics

    short = get_profile("smoke").replace(**{"train.max_steps": 2, "train.epochs": 2})
    train(short, tmp_path / "run", progress=False)
    train(short, tmp_path / "run", progress=True)
    assert ("finished at step 2, stopped by train.max_steps=2: nothing more to train (a larger "
            "train.max_steps trains on)") in capsys.readouterr().out
    train(short.replace(**{"train.max_steps": 4}), tmp_path / "run", progress=False)
    assert [h["step"] for h in read_metrics(tmp_path / "run")] == [2, 4]


@pytest.mark.slow
def test_two_gloo_processes_give_the_loss_of_one_process_on_the_same_global_batch(tmp_path):
    env = cli_env(tmp_path / "home")
    # Denoising noise is drawn by each process from its own RNG, so it is off here.
    common = ["train", *SMOKE, "--max-steps", "2", "--dn-groups", "0", "--set", "model.frozen_bn=true"]
    detrlib(*common, "--batch-size", "4", "--out", str(tmp_path / "one"), env=env)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    subprocess.run([torchrun, "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                    "--master_port", str(port), "-m", "detrlib", *common, "--batch-size", "2",
                    "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True, check=True)
    one, two = ([json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()][-1]
                for d in ("one", "two"))
    losses = [k for k in one if k.startswith("train_loss")]
    assert "train_loss_ce" in losses and "train_loss_giou_0" in losses
    for k in losses:
        assert two[k] == pytest.approx(one[k], rel=1e-4, abs=1e-6), k
    w1, w2 = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    assert all(torch.allclose(w1[k], w2[k], rtol=1e-4, atol=1e-6) for k in w1)


class Exploding(nn.Module):
    """Gives a NaN loss on the batches listed in ``bad``."""

    def __init__(self, bad):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.bad, self.calls = set(bad), 0

    def forward(self, images, mask, targets=None):
        self.calls += 1
        value = torch.tensor(float("nan")) if self.calls in self.bad else torch.tensor(1.0)
        return {"x": self.w * value}


class Criterion(nn.Module):
    """The sum of the model's ``"x"`` output as the only loss term."""

    def forward(self, outputs, targets):
        return {"loss_x": outputs["x"].sum()}

    def total(self, losses):
        return losses["loss_x"]


def loader(n):
    return [(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.bool), [{}]) for _ in range(n)]


def sgd_state(model, steps_per_epoch: int, **position) -> TrainState:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return TrainState(model, opt, make_scheduler(opt, TrainConfig(), steps_per_epoch), **position)


def test_non_finite_losses_are_skipped_then_stop_the_run():
    state = sgd_state(Exploding(bad={2, 4}), steps_per_epoch=10)
    means = train_one_epoch(state, Criterion(), loader(6), TrainConfig(), progress=False)
    assert state.step == 4 and state.batch == 6 and means["skipped"] == 2 and torch.isfinite(state.model.w).all()
    assert [row[0] for row in state.steps] == [1, 2, 3, 4] and state.totals == EpochTotals()

    state = sgd_state(Exploding(bad=set(range(1, 100))), steps_per_epoch=10)
    with pytest.raises(FloatingPointError, match=f"{NAN_PATIENCE} non-finite losses in a row"):
        train_one_epoch(state, Criterion(), loader(20), TrainConfig(), progress=False)


def test_an_epoch_ends_at_the_step_budget_and_the_time_cap():
    state = sgd_state(Exploding(bad=()), steps_per_epoch=10, step=5)
    train_one_epoch(state, Criterion(), loader(6), TrainConfig(max_steps=7), progress=False)
    assert state.step == 7 and state.batch == 2 and state.stop_reason(TrainConfig(max_steps=7)) == "max_steps"
    state = sgd_state(Exploding(bad=()), steps_per_epoch=10, wall_time=120.0)  # two minutes of earlier sessions
    train_one_epoch(state, Criterion(), loader(6), TrainConfig(max_minutes=2), progress=False)
    assert state.step == 1 and state.stop_reason(TrainConfig(max_minutes=2)) == "max_minutes"


def test_a_resumed_run_trains_with_the_learning_rate_its_config_names():
    import copy
    import dataclasses

    cfg = TrainConfig(lr=1e-3, weight_decay=0.0, warmup_steps=4, lr_drop=1, epochs=3)

    def fresh(cfg):
        model = Exploding(bad=())
        return TrainState(model, (opt := make_optimizer(model, cfg)), make_scheduler(opt, cfg, steps_per_epoch=3))

    first = fresh(cfg)
    train_one_epoch(first, Criterion(), loader(3), cfg, progress=False)
    saved = copy.deepcopy(first.state_dict())
    same = fresh(cfg)
    same.load_state_dict(saved)
    set_learning_rates(same, cfg)  # the settings it began with: exactly the restored learning rate
    assert same.optimizer.param_groups[0]["lr"] == first.optimizer.param_groups[0]["lr"] == 1e-3 * 0.1

    lower = dataclasses.replace(cfg, lr=2e-4, weight_decay=0.5)
    resumed = fresh(lower)
    resumed.load_state_dict(saved)
    assert resumed.optimizer.param_groups[0]["lr"] == 1e-3 * 0.1  # the restored optimizer's, from the old settings
    set_learning_rates(resumed, lower)
    group = resumed.optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (pytest.approx(2e-5), 0.5)
    train_one_epoch(resumed, Criterion(), loader(3), lower, progress=False)
    assert [row[2] for row in resumed.steps[3:]] == pytest.approx([2e-5] * 3)  # the new rate, after the drop


def test_a_single_process_agrees_with_itself():
    assert agree([True, 0, 3]) == [1, 0, 3] and agree([5, 2], "min") == [5, 2]


def test_an_epoch_resumed_midway_still_averages_all_its_steps():
    import copy

    class Constant(nn.Module):  # the loss of a batch is the batch's value, whatever the weights
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, images, mask, targets=None):
            return {"x": self.w * 0 + images.mean()}

    batches = [(torch.full((1, 3, 2, 2), float(v)), torch.zeros(1, 2, 2, dtype=torch.bool), [{}]) for v in (1, 2, 3, 6)]
    whole, saved = sgd_state(Constant(), steps_per_epoch=4), {}

    def checkpoint(state):  # what train's checkpoint stores at step 2
        if state.step == 2:
            saved.update(copy.deepcopy(state.state_dict()))

    whole_means = train_one_epoch(whole, Criterion(), batches, TrainConfig(), checkpoint, progress=False)
    resumed = sgd_state(Constant(), steps_per_epoch=4)
    resumed.load_state_dict(saved)
    assert (resumed.step, resumed.batch) == (2, 2) and resumed.totals.steps == 2
    resumed_means = train_one_epoch(resumed, Criterion(), batches[resumed.batch:], TrainConfig(), progress=False)
    assert whole_means["loss"] == resumed_means["loss"] == 3.0 and resumed.step == 4 and resumed.totals == EpochTotals()
    assert [row[:3] for row in resumed.steps] == [row[:3] for row in whole.steps]  # step, loss, lr


def test_two_learning_rates_and_the_step_drop():
    cfg = get_profile("smoke")
    from detrlib.model import build_model

    model = build_model(cfg.model)
    t = TrainConfig(lr=1e-4, lr_backbone=1e-5, lr_drop=2, epochs=4)
    opt = make_optimizer(model, t)
    assert [g["lr"] for g in opt.param_groups] == [1e-4, 1e-5]
    backbone = {id(p) for n, p in model.named_parameters() if n.startswith("backbone")}
    assert {id(p) for p in opt.param_groups[1]["params"]} == {id(p) for p in model.parameters()
                                                               if id(p) in backbone and p.requires_grad}
    sched = make_scheduler(opt, t, steps_per_epoch=3)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:6] == [1e-4] * 6 and lrs[6:] == pytest.approx([1e-5] * 6)


def test_the_fused_optimizer_steps_like_the_plain_adamw():
    from detrlib.model import build_model

    torch.manual_seed(0)
    model, twin = build_model(get_profile("smoke").model), build_model(get_profile("smoke").model)
    twin.load_state_dict(model.state_dict())
    fused = make_optimizer(model, TrainConfig(lr=1e-3, lr_backbone=1e-4, weight_decay=1e-2))
    assert all(g["fused"] for g in fused.param_groups)
    twin_of = {id(p): q for p, q in zip(model.parameters(), twin.parameters())}
    plain = torch.optim.AdamW([{**g, "params": [twin_of[id(p)] for p in g["params"]], "fused": False}
                               for g in fused.param_groups])
    for _ in range(3):
        for p, q in zip(model.parameters(), twin.parameters()):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        fused.step()
        plain.step()
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7), name


def test_detect_keeps_integer_labels(tmp_path, monkeypatch):
    monkeypatch.setenv("DETRLIB_HOME", str(tmp_path))
    from detrlib.data import build_dataset, build_loader
    from detrlib.engine import detect
    from detrlib.model import PostProcess, build_model

    cfg = get_profile("smoke")
    val = build_dataset(cfg.data, "val")
    predictions = detect(build_model(cfg.model).eval(), build_loader(val, 4, train=False), PostProcess(),
                          torch.device("cpu"))
    assert len(predictions) == len(val)
    for image_id, pred in predictions.items():
        assert pred["labels"].dtype == torch.int64  # class indices, usable as list indices
        assert pred["labels"].max() < cfg.model.num_classes and pred["labels"].min() >= 0
        assert pred["scores"].dtype == pred["boxes"].dtype == torch.float32
        assert pred["boxes"].shape == (cfg.model.num_queries, 4)


def test_static_pages_get_the_evaluation_lines_but_no_progress_bar(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DETRLIB_HOME", str(tmp_path))
    from detrlib.engine import train

    code = ("from detrlib.config import get_profile\nfrom detrlib.engine import train\n"
            f"train(get_profile('smoke').replace(**{{'train.max_steps': 2}}), {str(tmp_path / 'static')!r})")
    static = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TQDM_DISABLE": "1"})  # as make book starts its kernels
    assert static.returncode == 0, static.stderr
    assert "epoch 1 step 2" in static.stdout and "epoch 1/1" not in static.stderr
    cfg = get_profile("smoke").replace(**{"train.max_steps": 2})
    train(cfg, tmp_path / "live", progress=True)
    assert "epoch 1/1" in capsys.readouterr().err
