"""Training and evaluation: one epoch, one evaluation, and :func:`train`, a whole run that writes
its metrics as it goes, checkpoints, and resumes exactly where it stopped."""
from __future__ import annotations

import functools
import json
import math
import os
import random
import re
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from detrlib import checkpoint as ckpt
from detrlib import runfolder
from detrlib.config import Config, ConfigError, TrainConfig, pick_device, runs_dir

NAN_PATIENCE = 5  # non-finite losses in a row before a run gives up


# --- set-up: seeds, distributed processes, precision, optimizer -------------------------------------

def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def distributed_env() -> tuple[int, int]:
    """(rank, world size) under ``torchrun``; (0, 1) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init_distributed(device: torch.device) -> tuple[int, int]:
    rank, world = distributed_env()
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend)
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return rank, world


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (x86 AVX512-BF16 or AMX, Arm's BF16), as Linux's
    ``/proc/cpuinfo`` lists it. Elsewhere bf16 is emulated and slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16|bf16)\b", flags) is not None


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``TrainConfig.amp``: bf16 where the device computes in it, else fp16 on
    a GPU (a T4 has no bf16) and full fp32 (None) on a CPU; None for ``"off"``."""
    if amp == "off":
        return None
    if amp == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_bf16() else None
    if amp in ("bf16", "fp16"):
        return torch.bfloat16 if amp == "bf16" else torch.float16
    raise ValueError(f"train.amp must be off, auto, bf16 or fp16, not {amp!r}")


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with DETR's two learning rates: ``lr`` for the transformer, ``lr_backbone`` for the CNN."""
    backbone, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (backbone if name.startswith("backbone") else rest).append(p)
    groups = [{"params": rest, "lr": cfg.lr}]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.lr_backbone})
    # the fused kernel updates a parameter in one operation instead of about eight: faster, and on a
    # busy CPU far fewer waits at thread barriers (Hugging Face's Trainer uses it too)
    fused = all(p.device.type in ("cpu", "cuda") for p in backbone + rest)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def make_scheduler(optimizer, cfg: TrainConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then DETR's step drop (x0.1 at epoch ``lr_drop``) or a cosine decay.
    Stepped once per optimizer step."""
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    drop_at = cfg.lr_drop * steps_per_epoch

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        if cfg.lr_schedule == "cosine":
            return warm * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(1, total)))
        if cfg.lr_schedule == "step":
            return warm * (0.1 if step >= drop_at else 1.0)
        raise ValueError(f"train.lr_schedule must be 'step' or 'cosine', not {cfg.lr_schedule!r}")

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --- one epoch, one evaluation -------------------------------------------------------------------------

def to_device(images, mask, targets, device):
    targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
    return images.to(device, non_blocking=True), mask.to(device, non_blocking=True), targets


def weighted_loss(loss_dict: dict, weight_dict: dict) -> torch.Tensor:
    return sum(loss_dict[k] * w for k, w in weight_dict.items() if k in loss_dict)


def logged_values(loss, loss_dict: dict) -> dict[str, float]:
    """The loss and its terms as floats; under DDP their mean over processes, i.e. the values of
    the global batch (the criterion normalizes by global counts, see ``process_mean``)."""
    from detrlib.criterion import process_mean

    values = process_mean(torch.stack([loss.detach().float()] + [v.detach().float() for v in loss_dict.values()]))
    return dict(zip(["loss", *loss_dict], values.tolist()))


def train_one_epoch(model, criterion, loader, optimizer, scheduler, device, *, dtype=None, scaler=None,
                    clip_max_norm: float = 0.1, grad_accum_steps: int = 1, step: int = 0,
                    max_steps: int = 0, deadline: float = 0.0, on_step=None, progress: bool = True,
                    desc: str = "train", pass_targets: bool = False,
                    step_log: list | None = None, totals: dict | None = None) -> tuple[dict, int]:
    """One pass over ``loader``. Returns (mean of each logged loss term, optimizer steps so far).

    The pass ends early after ``max_steps`` optimizer steps in all, or at the first optimizer step
    that ends after ``deadline`` (a ``time.perf_counter()`` value; 0: none).
    ``totals`` holds the epoch's running sums (``sums`` of each term, ``steps``, ``skipped``),
    updated in place and cleared at the end: a checkpoint taken mid-epoch stores them, so that an
    epoch resumed from it still averages all its steps.
    ``pass_targets`` hands the targets to the model too, which denoising training needs.
    ``step_log``, a list, gets ``[step, loss, lr, seconds]`` for every optimizer step, the seconds
    since the previous step (data loading included): the curves of chapter 7.

    A batch with a non-finite loss is skipped and counted (``skipped``); after ``NAN_PATIENCE`` in a
    row the run stops with an error. ``on_step(step)`` runs after each optimizer step (checkpoints).
    """
    model.train()
    criterion.train()
    totals = {} if totals is None else totals
    sums, bad_in_row = totals.setdefault("sums", {}), 0
    totals.setdefault("steps", 0)
    totals.setdefault("skipped", 0)
    bar = tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    optimizer.zero_grad(set_to_none=True)
    tic = time.perf_counter()
    for i, batch in enumerate(bar):
        images, mask, targets = to_device(*batch, device)
        with autocast(device, dtype):
            outputs = model(images, mask, targets=targets) if pass_targets else model(images, mask)
        loss_dict = criterion(outputs, targets)
        loss = weighted_loss(loss_dict, criterion.weight_dict)
        if not torch.isfinite(loss):
            totals["skipped"], bad_in_row = totals["skipped"] + 1, bad_in_row + 1
            optimizer.zero_grad(set_to_none=True)
            if bad_in_row >= NAN_PATIENCE:
                raise FloatingPointError(
                    f"training diverged: {bad_in_row} non-finite losses in a row at step {step} "
                    f"({ {k: round(v.item(), 4) for k, v in loss_dict.items()} }); lower train.lr, keep "
                    "train.clip_max_norm > 0, or set train.amp=off. No checkpoint was written.")
            continue
        bad_in_row = 0
        (scaler.scale(loss) if scaler else loss).div(grad_accum_steps).backward()
        if (i + 1) % grad_accum_steps:
            continue
        if scaler:
            scaler.unscale_(optimizer)
        if clip_max_norm > 0:
            nn.utils.clip_grad_norm_(model.parameters(), clip_max_norm)
        if scaler:
            scaler.step(optimizer)  # skips the update when fp16 gradients overflowed, and lowers its scale
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # after a skipped fp16 update torch warns that the schedule ran first
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            scheduler.step()
        step += 1
        totals["steps"] += 1
        values = logged_values(loss, loss_dict)
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v
        if step_log is not None:
            toc = time.perf_counter()
            step_log.append([step, values["loss"], optimizer.param_groups[0]["lr"], toc - tic])
            tic = toc
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.1e}", refresh=False)
        if on_step:
            on_step(step, i + 1)
        if (max_steps and step >= max_steps) or (deadline and time.perf_counter() >= deadline):
            break
    means = {k: v / max(totals["steps"], 1) for k, v in sums.items()}
    means["skipped"] = totals["skipped"]
    totals.clear()
    return means, step


@torch.no_grad()
def predict(model, loader, postprocess, device, dtype=None, progress: bool = False) -> dict:
    """Predictions ``{image_id: {"scores", "labels", "boxes" x1,y1,x2,y2 in original pixels}}``."""
    model.eval()
    predictions = {}
    for images, mask, targets in tqdm(loader, desc="eval", disable=not progress, leave=False):
        images, mask, targets = to_device(images, mask, targets, device)
        with autocast(device, dtype):
            outputs = model(images, mask)
        sizes = torch.stack([t["orig_size"] for t in targets])
        for t, result in zip(targets, postprocess(outputs, sizes)):
            predictions[int(t["image_id"])] = {k: (v.float() if v.is_floating_point() else v).cpu()
                                                  for k, v in result.items()}
    return predictions


def evaluate(model, dataset, loader, postprocess, device, dtype=None, train_counts=None,
             progress: bool = False) -> dict:
    """AP@0.5 and the other COCO metrics of ``model`` on ``dataset`` (see :mod:`detrlib.evaluate`)."""
    from detrlib.evaluate import evaluate_detections, ground_truth

    predictions = predict(model, loader, postprocess, device, dtype, progress)
    return evaluate_detections(ground_truth(dataset), predictions, list(dataset.classes), train_counts)


# --- a whole run --------------------------------------------------------------------------------------

def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"


def run_dir(cfg: Config, name: str = "") -> Path:
    """The folder of a run: one per configuration, so the same settings reuse the same run."""
    return runs_dir() / f"{name or cfg.profile}-{cfg.key()}"


def is_finished(out: str | Path) -> bool:
    """Whether the run in folder ``out`` has ended (its last evaluation written, its last checkpoint
    marked finished)."""
    state = ckpt.load_latest(Path(out) / "checkpoints")
    return bool(state and state.get("finished"))


def read_metrics(out: str | Path) -> list[dict]:
    path = Path(out) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


STEP_COLUMNS = ("step", "loss", "lr", "seconds")


def read_steps(out: str | Path) -> dict[str, list[float]]:
    """A run's ``steps.csv`` as columns: ``step``, ``loss``, ``lr`` and ``seconds`` per optimizer step."""
    path = Path(out) / "steps.csv"
    rows = [line.split(",") for line in path.read_text().splitlines()[1:]] if path.exists() else []
    return {name: [float(r[i]) for r in rows] for i, name in enumerate(STEP_COLUMNS)}


def _write_steps(out: Path, steps: list[list[float]]) -> None:
    lines = [",".join(STEP_COLUMNS)] + [f"{int(s)},{loss:.6g},{lr:.6g},{sec:.6g}" for s, loss, lr, sec in steps]
    ckpt.atomic_write_text(out / "steps.csv", "\n".join(lines) + "\n")


def to_json(obj) -> str:
    """Strict JSON (what ``jq`` and other languages read): NaN, e.g. the AP of a class with no
    objects, becomes null."""
    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return json.dumps(clean(obj), allow_nan=False)


def _write_metrics(out: Path, history: list[dict]) -> None:
    ckpt.atomic_write_text(out / "metrics.jsonl", "".join(to_json(h) + "\n" for h in history))


def _one_run_per_folder(train_fn):
    """Run ``train_fn`` holding its run folder (:mod:`detrlib.runfolder`): refused while another
    process trains there, or when it would write over another run's files."""
    @functools.wraps(train_fn)
    def guarded(cfg: Config, out: str | Path | None = None, resume: bool = True, progress: bool = True,
                name: str = "") -> Path:
        out = Path(out) if out else run_dir(cfg, name)
        if distributed_env()[0] != 0:  # process 0 writes the folder
            return train_fn(cfg, out, resume, progress, name)
        with runfolder.locked(out):
            runfolder.check_new_run(out, resume)
            return train_fn(cfg, out, resume, progress, name)

    return guarded


def _check_data(cfg: Config, train_set, val_set, world: int) -> None:
    """Refuse data the model cannot learn from: other classes than the model's, or fewer images than one batch."""
    from detrlib.data.voc import abbreviate

    names = tuple(train_set.classes)
    if len(names) != cfg.model.num_classes:
        raise ConfigError(f"the training data has {len(names)} classes ({abbreviate(names)}) but model.num_classes "
                          f"is {cfg.model.num_classes}: pass --set model.num_classes={len(names)}")
    if tuple(val_set.classes) != names:
        raise ConfigError(f"the validation data's classes ({abbreviate(val_set.classes)}) are not the training "
                          f"data's ({abbreviate(names)}): validate on sets with the same classes.txt")
    per_step = cfg.train.batch_size * world * cfg.train.grad_accum_steps
    if len(train_set) < per_step:
        raise ConfigError(f"an optimizer step takes {per_step} images (train.batch_size x grad_accum_steps x "
                          f"processes) but the training data has {len(train_set)}: it would train nothing; "
                          "lower train.batch_size")


@_one_run_per_folder
def train(cfg: Config, out: str | Path | None = None, resume: bool = True, progress: bool = True,
          name: str = "") -> Path:
    """Train ``cfg`` in the run folder ``out`` (default: :func:`run_dir`) and return that folder.

    The folder holds ``config.json``, ``metrics.jsonl`` (one JSON object per evaluation, with the
    peak memory of the run so far), ``steps.csv`` (loss, learning rate and seconds of every step)
    and ``checkpoints/``. Each evaluation also matches a fixed batch of training images and records
    ``match_instability``, the share of matched queries whose object changed since the previous
    evaluation (see :mod:`detrlib.instability`). With ``resume`` a stopped run continues from its
    newest readable checkpoint, and a finished run is reused as it is. ``progress`` shows a bar
    per epoch (except on the book's static pages, ``DETRLIB_STATIC_WIDGETS=1``), the measured
    speed after a warm-up, and a line per evaluation.

    The run ends after ``train.epochs``, after ``train.max_steps`` optimizer steps, or at the first
    step after ``train.max_minutes`` of wall clock (the minutes of earlier sessions of a resumed run
    count); it always ends with an evaluation and a checkpoint marked finished, and the last line
    of ``metrics.jsonl`` says what stopped it (``"stopped"``: ``epochs``, ``max_steps`` or
    ``max_minutes``).
    """
    from detrlib.budget import WARMUP_STEPS, progress_line
    from detrlib.checkpoint import load_official_checkpoint
    from detrlib.config import check_device, colab_storage_warning
    from detrlib.criterion import build_criterion
    from detrlib.data import build_dataset, build_loader, collate
    from detrlib.data.batching import SeededItems, epoch_batches, repeat_factors, training_labels
    from detrlib.instability import MatchingProbe, instability
    from detrlib.memory import peak_memory_mb, reset_peak_memory
    from detrlib.widgets import static_mode  # a built page cannot animate a progress bar
    from detrlib.model import PostProcess, build_model

    t = cfg.train
    check_device(cfg)
    device = pick_device(t.device)
    rank, world = init_distributed(device)
    out = Path(out) if out else run_dir(cfg, name)
    ckpt_dir = out / "checkpoints"
    seed_everything(t.seed)
    if rank == 0 and (warning := colab_storage_warning(out)):
        print(warning)

    train_set, val_set = build_dataset(cfg.data, "train"), build_dataset(cfg.data, "val")
    _check_data(cfg, train_set, val_set, world)
    model = build_model(cfg.model).to(device)
    counts = [train_set.class_counts()[name] for name in train_set.classes]  # training objects per class
    criterion = build_criterion(cfg, counts).to(device)
    postprocess = PostProcess()
    dtype = amp_dtype(t.amp, device)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    optimizer = make_optimizer(model, t)
    steps_per_epoch = len(train_set) // (t.batch_size * world) // t.grad_accum_steps
    scheduler = make_scheduler(optimizer, t, steps_per_epoch)

    state = ckpt.load_latest(ckpt_dir) if resume else None
    if resume and state is None and rank == 0:
        runfolder.check_resumable(out)
    epoch, batch_in_epoch, step, history, train_time, matched, steps = 0, 0, 0, [], 0.0, None, []
    totals = {}  # the running sums of the epoch so far (train_one_epoch)
    wall_time = 0.0  # seconds this run has spent in train(), over every session
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        epoch, batch_in_epoch, step = state["epoch"], state["batch"], state["step"]
        history, train_time = state["history"], state["train_time"]
        wall_time = state.get("wall_time", train_time)
        matched = torch.tensor(state["matched"]) if state.get("matched") is not None else None
        steps = state["steps"].tolist() if "steps" in state else []
        totals = state.get("epoch_totals") or {}
        if state.get("finished") and (epoch >= t.epochs or (t.max_steps and step >= t.max_steps)
                                      or (t.max_minutes and wall_time >= t.max_minutes * 60)):
            if rank == 0 and progress:  # reused as it is; a larger budget trains on
                print(f"{out} finished at epoch {epoch}, step {step}: nothing more to train (a larger "
                      "train.epochs, max_steps or max_minutes trains on)")
            return out
        if rank == 0:
            print(f"resumed from {state['path']}: epoch {epoch}, step {step}")
    elif t.init_checkpoint:
        report = load_official_checkpoint(model, t.init_checkpoint)
        if rank == 0 and progress:
            print(report)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        ckpt.atomic_write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=2))
        _write_metrics(out, history)

    net = model
    if world > 1:
        if device.type == "cuda" and not cfg.model.frozen_bn:  # batch statistics over the global batch
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    factors = repeat_factors(training_labels(train_set), cfg.data.repeat_factor_t) if cfg.data.repeat_factor_t > 0 else None
    val_loader = build_loader(val_set, t.batch_size, train=False, num_workers=cfg.data.num_workers)
    best = max((h.get("AP50", -1.0) for h in history), default=-1.0)
    probe_items = [SeededItems(train_set)[(i, t.seed)] for i in range(min(t.batch_size, len(train_set)))]
    probe = MatchingProbe(*collate(probe_items), criterion.matcher)

    session_start, session_steps = time.perf_counter(), 0

    def elapsed() -> float:
        return wall_time + time.perf_counter() - session_start

    def snapshot(finished=False):
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                "rng": ckpt.rng_state(), "epoch": epoch, "batch": batch_in_epoch, "step": step,
                "history": history, "train_time": train_time, "wall_time": elapsed(),
                "config": cfg.to_dict(), "finished": finished,
                "classes": list(train_set.classes), "epoch_totals": totals,
                "matched": matched.tolist() if matched is not None else None,
                "steps": torch.tensor(steps, dtype=torch.float64).reshape(-1, len(STEP_COLUMNS))}

    def on_step(now_step, batches_done):
        nonlocal batch_in_epoch, step, session_steps
        session_steps += 1
        if rank == 0 and progress and session_steps == WARMUP_STEPS:
            seconds = sorted(row[3] for row in steps[-WARMUP_STEPS // 2:])[WARMUP_STEPS // 4]  # median
            total = t.max_steps or t.epochs * steps_per_epoch
            print(progress_line(seconds, device_name(device), total - now_step, cfg, elapsed()))
        if rank == 0 and t.checkpoint_every and now_step % t.checkpoint_every == 0:
            step, batch_in_epoch = now_step, start_batch + batches_done  # the snapshot's position
            ckpt.save_checkpoint(snapshot(), ckpt_dir, now_step, t.keep_last)

    def stop_reason() -> str:
        if t.max_steps and step >= t.max_steps:
            return "max_steps"
        if t.max_minutes and elapsed() >= t.max_minutes * 60:
            return "max_minutes"
        return "epochs" if epoch >= t.epochs else ""

    reset_peak_memory(device)
    stopped, means = stop_reason(), {}  # a resumed run may stop at once, killed before its last evaluation
    while True:
        if not stopped:
            batches = epoch_batches(len(train_set), t.batch_size, t.seed, epoch, rank, world, factors)
            start_batch = batch_in_epoch
            loader = torch.utils.data.DataLoader(  # its own generator: starting it must not draw from the global RNG
                SeededItems(train_set), batch_sampler=batches[start_batch:], collate_fn=collate,
                num_workers=cfg.data.num_workers, generator=torch.Generator().manual_seed(t.seed + epoch))
            tic = time.perf_counter()
            means, step = train_one_epoch(
                net, criterion, loader, optimizer, scheduler, device, dtype=dtype, scaler=scaler,
                clip_max_norm=t.clip_max_norm, grad_accum_steps=t.grad_accum_steps, step=step,
                max_steps=t.max_steps, on_step=on_step, progress=progress and rank == 0 and not static_mode(),
                deadline=session_start + t.max_minutes * 60 - wall_time if t.max_minutes else 0.0,
                desc=f"epoch {epoch + 1}/{t.epochs}", pass_targets=cfg.model.dn_groups > 0, step_log=steps,
                totals=totals)
            train_time += time.perf_counter() - tic
            epoch, batch_in_epoch = epoch + 1, 0
            stopped = stop_reason()
        evaluated = bool(history) and history[-1]["step"] == step
        if rank == 0 and (epoch % t.eval_every == 0 or stopped) and not evaluated:
            metrics = evaluate(model, val_set, val_loader, postprocess, device, dtype, counts)
            now_matched = probe(model)
            if matched is not None:
                metrics["match_instability"] = instability(matched, now_matched)
            matched = now_matched
            history.append({"step": step, "epoch": epoch, "train_time_s": round(train_time, 2),
                            "wall_time_s": round(elapsed(), 2), "peak_memory_mb": peak_memory_mb(device),
                            **{f"train_{k}" if k != "skipped" else k: v for k, v in means.items()},
                            **metrics, **({"stopped": stopped} if stopped else {})})
            _write_metrics(out, history)
            if metrics["AP50"] > best:
                best = metrics["AP50"]
                ckpt.save_best({"model": model.state_dict(), "config": cfg.to_dict(), "metrics": history[-1],
                                "classes": list(train_set.classes)}, ckpt_dir)
            if progress:
                print(f"epoch {epoch} step {step}: loss {means.get('loss', float('nan')):.3f}, "
                      f"AP50 {metrics['AP50']:.3f}, AP {metrics['AP']:.3f} ({cfg.profile} profile)"
                      + (f"; stopped by {stopped}" if stopped else ""))
        if rank == 0:
            ckpt.save_checkpoint(snapshot(finished=bool(stopped)), ckpt_dir, step, t.keep_last)
            _write_steps(out, steps)
        if stopped:
            break
    if world > 1:
        torch.distributed.barrier()
    return out
