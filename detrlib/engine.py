"""Training and evaluation: one epoch, one evaluation, and :func:`train`, a whole run that writes its metrics as it
goes (:mod:`detrlib.runfolder`), checkpoints its :class:`~detrlib.train_state.TrainState`, and resumes exactly."""
from __future__ import annotations

import math
import os
import random
import time
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from detrlib import checkpoint as ckpt
from detrlib import runfolder
from detrlib.config import Config, ConfigError, TrainConfig, check_device, device_name, pick_device
from detrlib.errors import DivergedError, ProcessGroupError, RunFolderError
from detrlib.precision import autocast, precision
from detrlib.train_state import EpochTotals, TrainState

NAN_PATIENCE = 5  # non-finite losses in a row before a run gives up
WARMUP_STEPS = 20  # steps a run takes before it prints its measured speed
# how long a process waits in a collective: longer than process 0's longest evaluation and checkpoint (others wait)
PROCESS_TIMEOUT = timedelta(minutes=30)
CUBLAS_WORKSPACE = ":4096:8"  # a fixed cuBLAS workspace, which deterministic algorithms need on CUDA


# --- set-up: seeds, distributed processes, precision, optimizer -------------------------------------

def bars(progress: bool) -> bool:
    """Whether to draw progress bars: when asked, and not under ``TQDM_DISABLE=1`` (as ``make book``
    runs its kernels: a built page cannot animate them), which tqdm's notebook bars do not read themselves."""
    return progress and os.environ.get("TQDM_DISABLE", "") in ("", "0")


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed every generator and, with ``deterministic``, run the settings :func:`deterministic_settings`
    lists: the same seed trains the same run, and a resumed run continues it exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS computes deterministically only with a fixed workspace, read when torch first sizes it
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.use_deterministic_algorithms(True, warn_only=True)
        # a debugging aid that also fills every new tensor with NaN: about 10% of a quick CPU step
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.benchmark = False


def deterministic_settings() -> dict:
    """The settings a run trains with, as :func:`seed_everything` leaves them (``bench gpu`` records them)."""
    return {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG", "")}


def init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size) under ``torchrun``, its process group started; (0, 1) otherwise."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend, timeout=PROCESS_TIMEOUT)
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return rank, world


def lost_process(err: BaseException) -> bool:
    """Whether ``err`` is a collective that failed because another process ended or hung: NCCL
    raises a DistError, gloo a RuntimeError from its transport (a closed connection, a timeout)."""
    return isinstance(err, torch.distributed.DistError) or "gloo/transport" in str(err)


def agree(values: list, op: str = "max", device: torch.device | None = None) -> list[int]:
    """``values`` (flags or counts) over every process of a distributed run by one all-reduce: their maximum (a flag
    any process raises) or, with ``op="min"``, their minimum; the values themselves in one process. A step is ended
    or skipped by it on every process at once, so that none waits in a collective the others have left."""
    values = [int(v) for v in values]
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.int64, device=device)
    torch.distributed.all_reduce(tensor, op=getattr(torch.distributed.ReduceOp, op.upper()))
    return tensor.tolist()


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
    """Linear warm-up, then DETR's step drop (x0.1 at epoch ``lr_drop``) or a cosine decay, per optimizer step."""
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    drop_at = cfg.lr_drop * steps_per_epoch

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        if cfg.lr_schedule == "cosine":
            return warm * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(1, total)))
        return warm * (0.1 if step >= drop_at else 1.0)  # "step"

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def set_learning_rates(state: TrainState, cfg: TrainConfig) -> None:
    """Give a restored optimizer and schedule ``cfg``'s learning rates and weight decay at the schedule's step (its
    shape is already ``cfg``'s: :func:`make_scheduler`): a resumed run trains with what its ``config.json`` shows."""
    groups, scheduler = state.optimizer.param_groups, state.scheduler
    scheduler.base_lrs = [cfg.lr, cfg.lr_backbone][:len(groups)]
    for group, lr, factor in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group.update(initial_lr=lr, lr=lr * factor(scheduler.last_epoch), weight_decay=cfg.weight_decay)
    scheduler._last_lr = [group["lr"] for group in groups]


def new_train_state(model: nn.Module, cfg: TrainConfig, steps_per_epoch: int) -> TrainState:
    """A fresh run's state: :func:`make_optimizer`, :func:`make_scheduler`, and a GradScaler when training in fp16."""
    optimizer = make_optimizer(model, cfg)
    device = next(model.parameters()).device
    scaler = torch.amp.GradScaler(device.type) if precision(cfg.amp, device).scaler else None
    return TrainState(model, optimizer, make_scheduler(optimizer, cfg, steps_per_epoch), scaler)


# --- one epoch, one evaluation -------------------------------------------------------------------------

def to_device(images, mask, targets, device):
    targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
    return images.to(device, non_blocking=True), mask.to(device, non_blocking=True), targets


def logged_values(loss, loss_dict: dict) -> dict[str, float]:
    """The loss and its terms as floats; under DDP their mean over processes, i.e. the values of
    the global batch (the criterion normalizes by global counts, see ``process_mean``)."""
    from detrlib.criterion import process_mean

    values = process_mean(torch.stack([loss.detach().float()] + [v.detach().float() for v in loss_dict.values()]))
    return dict(zip(["loss", *loss_dict], values.tolist()))


def train_one_epoch(state: TrainState, criterion, batches, cfg: TrainConfig, on_step=None,
                    progress: bool = True) -> dict:
    """One pass of ``state.net`` over ``batches`` (``(images, mask, targets)``; the model gets the targets too, for
    denoising) with ``cfg``'s precision, gradient clipping and accumulation. Returns each logged loss term's mean
    over the epoch's optimizer steps.

    ``state`` advances as it goes: ``batch``, ``step``, ``totals`` (cleared at the end) and a ``steps`` row per
    optimizer step, its seconds counted since the previous one, data loading included (chapter 7's curves).
    ``on_step(state)`` runs after each optimizer step (checkpoints). The pass ends early when ``cfg.max_steps`` or
    ``cfg.max_minutes`` stops the run (:meth:`TrainState.stop_reason`), after the first step begun past the time
    cap. A batch with a non-finite loss is skipped and counted (``skipped``); ``NAN_PATIENCE`` in a row stop the
    run with an error. Under several processes each decision is taken once for all (:func:`agree`): the epoch has
    as many batches as the shortest process's share, a batch is skipped when its loss is non-finite on any process,
    and the time cap is reached when any process's clock says so.
    """
    model, optimizer, scaler = state.net, state.optimizer, state.scaler
    device = next(state.model.parameters()).device
    dtype = precision(cfg.amp, device).dtype
    model.train()
    criterion.train()
    totals, bad_in_row = state.totals, 0
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    length = agree([len(batches)], "min", device)[0] if distributed else None
    bar = tqdm(batches, total=length, desc=f"epoch {state.epoch + 1}/{cfg.epochs}", disable=not bars(progress),
               leave=False, dynamic_ncols=True)
    optimizer.zero_grad(set_to_none=True)
    tic = time.perf_counter()
    for i, batch in enumerate(bar):
        if i == length:
            break
        state.batch += 1
        images, mask, targets = to_device(*batch, device)
        with autocast(device, dtype):
            outputs = model(images, mask, targets=targets)
        loss_dict = criterion(outputs, targets)
        loss = criterion.total(loss_dict)
        bad, late = agree([not torch.isfinite(loss), state.over_time(cfg)], device=device)
        state.out_of_time = state.out_of_time or bool(late)
        if bad:
            totals.skipped, bad_in_row = totals.skipped + 1, bad_in_row + 1
            optimizer.zero_grad(set_to_none=True)
            if bad_in_row >= NAN_PATIENCE:
                raise DivergedError(
                    f"training diverged: {bad_in_row} non-finite losses in a row at step {state.step} "
                    f"({ {k: round(v.item(), 4) for k, v in loss_dict.items()} }); lower train.lr, keep "
                    "train.clip_max_norm > 0, or set train.amp=off. No checkpoint was written.")
            continue
        bad_in_row = 0
        (scaler.scale(loss) if scaler else loss).div(cfg.grad_accum_steps).backward()
        if (i + 1) % cfg.grad_accum_steps:
            continue
        if scaler:
            scaler.unscale_(optimizer)
        if cfg.clip_max_norm > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_max_norm)
        if scaler:
            scaler.step(optimizer)  # skips the update when fp16 gradients overflowed, and lowers its scale
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # after a skipped fp16 update torch warns that the schedule ran first
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            state.scheduler.step()
        state.step += 1
        totals.steps += 1
        values = logged_values(loss, loss_dict)
        for k, v in values.items():
            totals.sums[k] = totals.sums.get(k, 0.0) + v
        toc = time.perf_counter()
        state.steps.append([state.step, values["loss"], optimizer.param_groups[0]["lr"], toc - tic])
        tic = toc
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.1e}", refresh=False)
        if on_step:
            on_step(state)
        if state.stop_reason(cfg) in ("max_steps", "max_minutes"):
            break
    state.totals = EpochTotals()
    return totals.means()


@torch.no_grad()
def detect(model, loader, postprocess, device, dtype=None, progress: bool = False) -> dict:
    """``model``'s detections on every image of ``loader``: ``{image_id: {"scores", "labels",
    "boxes" x1,y1,x2,y2 in original pixels}}``."""
    model.eval()
    predictions = {}
    for images, mask, targets in tqdm(loader, desc="eval", disable=not bars(progress), leave=False):
        images, mask, targets = to_device(images, mask, targets, device)
        with autocast(device, dtype):
            outputs = model(images, mask)
        sizes = torch.stack([t["orig_size"] for t in targets])
        for t, result in zip(targets, postprocess(outputs, sizes)):
            predictions[int(t["image_id"])] = {k: (v.float() if v.is_floating_point() else v).cpu()
                                                  for k, v in result.items()}
    return predictions


def evaluate_model(model, dataset, loader, postprocess, device, dtype=None, train_counts=None,
                   progress: bool = False) -> dict:
    """AP@0.5 and the other COCO metrics of ``model`` on ``dataset`` (see :mod:`detrlib.evaluate`)."""
    from detrlib.evaluate import evaluate_detections, ground_truth

    predictions = detect(model, loader, postprocess, device, dtype, progress)
    return evaluate_detections(ground_truth(dataset), predictions, list(dataset.classes), train_counts)


# --- a whole run --------------------------------------------------------------------------------------

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


def train(cfg: Config, out: str | Path | None = None, resume: bool = True, progress: bool = True,
          name: str = "") -> Path:
    """Train ``cfg`` in the run folder ``out`` (default: :func:`~detrlib.runfolder.run_dir`) and return that folder.

    The folder's files are :mod:`detrlib.runfolder`'s; each evaluation also records the peak memory so far and
    ``match_instability`` (:mod:`detrlib.instability`). With ``resume`` a stopped run continues from its newest
    readable checkpoint, and a finished run is reused as it is. ``progress`` shows a bar per epoch, the measured
    speed after a warm-up, and a line per evaluation. The run ends after ``train.epochs``, ``train.max_steps``
    optimizer steps, or at the first step after ``train.max_minutes`` of wall clock (earlier sessions of a resumed
    run count), always with an evaluation, a checkpoint marked finished, and ``"stopped"`` (``epochs``,
    ``max_steps`` or ``max_minutes``) in the last line of ``metrics.jsonl``. Under ``torchrun``, when another process
    ends first or stops answering for ``PROCESS_TIMEOUT``, this one ends with a :class:`ProcessGroupError`, and the
    folder keeps its last checkpoint.
    """
    out = Path(out) if out else runfolder.run_dir(cfg, name)
    check_device(cfg)
    # the processes connect before process 0 claims the folder: a process that ends early then ends the others
    rank, world = init_distributed(pick_device(cfg.train.device))
    try:
        with runfolder.claimed(out, resume, hold=rank == 0):  # process 0 writes the folder
            return _train(cfg, out, resume, progress)
    except RuntimeError as err:
        if world > 1 and lost_process(err):
            raise ProcessGroupError(f"process {rank} of {world} stopped: another process of the run ended or "
                                    "stopped answering (its own message says why); the run folder keeps its last "
                                    f"checkpoint: resume with --resume --out {out}") from err
        raise


def speed_line(seconds_per_step: float, device: torch.device, steps_left: int, t: TrainConfig,
               elapsed_s: float) -> str:
    """What a run prints after its first :data:`WARMUP_STEPS` steps: its speed, and how long the rest takes."""
    minutes = steps_left * seconds_per_step / 60
    line = (f"measured {seconds_per_step:.3f} s per step on {device_name(device)}: the remaining {steps_left} "
            f"steps take about {minutes:.1f} min")
    if t.max_minutes and elapsed_s / 60 + minutes > t.max_minutes:
        line += f"; the {t.max_minutes:g}-minute cap (train.max_minutes) ends the run before that"
    return line


def _check_queries(cfg: Config, train_set) -> None:
    """Warn when a training picture holds more objects than the model has queries: DETR finds one per query."""
    most = max((len(r.labels) if cfg.data.keep_difficult else int((~r.difficult).sum()) for r in train_set.records),
               default=0)
    if most > cfg.model.num_queries:
        print(f"warning: model.num_queries is {cfg.model.num_queries} but a training picture holds {most} objects: "
              f"DETR finds at most one object per query; raise --num-queries to {most} or more")


def _train(cfg: Config, out: Path, resume: bool, progress: bool) -> Path:
    from detrlib.checkpoint import load_official_checkpoint
    from detrlib.criterion import build_criterion
    from detrlib.data import build_dataset, build_loader
    from detrlib.model import build_model

    t = cfg.train
    device = pick_device(t.device)
    rank, world = init_distributed(device)
    seed_everything(t.seed)
    train_set, val_set = build_dataset(cfg.data, "train"), build_dataset(cfg.data, "val")
    _check_data(cfg, train_set, val_set, world)
    model = build_model(cfg.model).to(device)
    counts = [train_set.class_counts()[name] for name in train_set.classes]  # training objects per class
    criterion = build_criterion(cfg, counts).to(device)
    state = new_train_state(model, t, t.steps_per_epoch(len(train_set), world))
    record = Recorder(cfg, out, device, world, progress=progress, active=rank == 0)

    saved = ckpt.load_latest(out / "checkpoints") if resume else None
    if resume and saved is None:
        record.check_resumable()
    if saved is not None:
        _continue(state, saved, cfg, out, world, device)
        if state.finished and (reason := state.stop_reason(t)):
            record.say(f"run {out.name} finished at step {state.step}, stopped by train.{reason}="
                       f"{getattr(t, reason):g}: nothing more to train (a larger train.{reason} trains on)")
            return out  # reused as it is; a larger budget trains on
        record.say(f"resumed from {saved['path']}: epoch {state.epoch}, step {state.step}", always=True)
    elif t.init_checkpoint:
        record.say(str(load_official_checkpoint(model, t.init_checkpoint)))
    if world > 1:
        net = model
        if device.type == "cuda" and not cfg.model.frozen_bn:  # batch statistics over the global batch
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        state.net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    record.begin(state, train_set, val_set, criterion, counts)

    stopped, means = state.stop_reason(t), {}  # a resumed run may stop at once, killed before its last evaluation
    while True:
        if not stopped:
            loader = build_loader(train_set, t.batch_size, train=True, num_workers=cfg.data.num_workers,
                                  repeat_factor_t=cfg.data.repeat_factor_t, seed=t.seed, epoch=state.epoch,
                                  start=state.batch, rank=rank, world=world)
            tic = time.perf_counter()
            means = train_one_epoch(state, criterion, loader, t, record.after_step, progress=progress and rank == 0)
            state.train_time += time.perf_counter() - tic
            stopped = state.stop_reason(t)
            if stopped not in ("max_steps", "max_minutes"):  # the epoch ran out of batches; a cap may end one midway
                state.epoch, state.batch = state.epoch + 1, 0
                stopped = state.stop_reason(t)
        record.end_of_epoch(state, means, stopped)
        if stopped:
            break
    if world > 1:
        torch.distributed.barrier()
    return out


def _continue(state: TrainState, saved: dict, cfg: Config, out: Path, world: int, device: torch.device) -> None:
    """Restore ``state`` from the checkpoint ``saved``, refusing what would not continue the same run."""
    runfolder.check_resume(out, saved, cfg)
    state.load_state_dict(saved)
    set_learning_rates(state, cfg.train)
    state.out_of_time = bool(agree([state.over_time(cfg.train)], device=device)[0])
    if state.finished and state.stop_reason(cfg.train):
        return
    if saved.get("processes", world) != world:
        n = saved["processes"]
        how = f"torchrun --nproc_per_node {n} -m detrlib train" if n > 1 else "python -m detrlib train, without torchrun"
        raise RunFolderError(f"{out} was trained by {n} process{'es' if n > 1 else ''} and this command runs {world}: "
                             f"resume it with {n} ({how} ... --resume), so that its batches and schedule go on as "
                             "they began")


class Recorder:
    """What only process 0 of a run does, in one place: print, evaluate, and write the run folder
    (config, metrics, steps, checkpoints). The other processes' Recorder (``active=False``) does nothing."""

    def __init__(self, cfg: Config, out: Path, device: torch.device, world: int, progress: bool, active: bool):
        self.cfg, self.out, self.device, self.world = cfg, out, device, world
        self.progress, self.active = progress, active
        if active and (warning := precision(cfg.train.amp, device).warning):
            print(warning)

    def say(self, line: str, always: bool = False) -> None:
        """Print ``line`` on process 0 (when the run shows its progress, or ``always``)."""
        if self.active and (self.progress or always):
            print(line)

    def check_resumable(self) -> None:
        """Refuse to start over in a folder whose checkpoints cannot be read (:func:`runfolder.check_resumable`)."""
        if self.active:
            runfolder.check_resumable(self.out)

    def begin(self, state: TrainState, train_set, val_set, criterion, counts: list[int]) -> None:
        """Write the folder's config and metrics, and set up the evaluations."""
        from detrlib.data import build_loader, collate
        from detrlib.data.batching import SeededItems
        from detrlib.instability import MatchingProbe
        from detrlib.memory import reset_peak_memory
        from detrlib.model import PostProcess

        t = self.cfg.train
        self.val_set, self.counts, self.classes = val_set, counts, list(train_set.classes)
        self.val_loader = build_loader(val_set, t.batch_size, train=False, num_workers=self.cfg.data.num_workers)
        self.postprocess = PostProcess(sigmoid=self.cfg.model.class_head == "sigmoid")
        self.steps_total = t.total_steps(len(train_set), self.world)
        self.best = max((h.get("AP50", -1.0) for h in state.history), default=-1.0)
        self.first_step = state.step
        if self.active:
            _check_queries(self.cfg, train_set)
            self.out.mkdir(parents=True, exist_ok=True)
            runfolder.write_config(self.out, self.cfg)
            runfolder.write_metrics(self.out, state.history)
        probe_items = [SeededItems(train_set)[(i, t.seed)] for i in range(min(t.batch_size, len(train_set)))]
        self.probe = MatchingProbe(*collate(probe_items), criterion.matcher)
        reset_peak_memory(self.device)
        state.start_clock()

    def after_step(self, state: TrainState) -> None:
        """After each optimizer step: the measured speed once warmed up, and the periodic checkpoint."""
        t = self.cfg.train
        if state.step - self.first_step == WARMUP_STEPS:
            seconds = sorted(row[3] for row in state.steps[-WARMUP_STEPS // 2:])[WARMUP_STEPS // 4]  # median
            self.say(speed_line(seconds, self.device, self.steps_total - state.step, t, state.elapsed()))
        if self.active and t.checkpoint_every and state.step % t.checkpoint_every == 0:
            self.checkpoint(state)

    def end_of_epoch(self, state: TrainState, means: dict, stopped: str) -> None:
        """Evaluate (every ``eval_every`` epochs, and when the run stops), log, keep the best weights, checkpoint."""
        if not self.active:
            return
        from detrlib.instability import instability
        from detrlib.memory import peak_memory_mb

        t, model = self.cfg.train, state.model
        evaluated = bool(state.history) and state.history[-1]["step"] == state.step
        if (state.epoch % t.eval_every == 0 or stopped) and not evaluated:
            dtype = precision(t.amp, self.device).dtype
            metrics = evaluate_model(model, self.val_set, self.val_loader, self.postprocess, self.device, dtype,
                                     self.counts)
            now_matched = self.probe(model)
            if state.matched is not None:
                metrics["match_instability"] = instability(state.matched, now_matched)
            state.matched = now_matched
            state.history.append({
                "step": state.step, "epoch": state.epoch, "train_time_s": round(state.train_time, 2),
                "wall_time_s": round(state.elapsed(), 2), "device": device_name(self.device),
                "peak_memory_mb": peak_memory_mb(self.device),
                **{f"train_{k}" if k != "skipped" else k: v for k, v in means.items()},
                **metrics, **({"stopped": stopped} if stopped else {})})
            runfolder.write_metrics(self.out, state.history)
            if metrics["AP50"] > self.best:
                self.best = metrics["AP50"]
                ckpt.save_best({"model": model.state_dict(), "config": self.cfg.to_dict(),
                                "metrics": state.history[-1], "classes": self.classes}, self.out / "checkpoints")
            epoch = state.epoch + (state.batch > 0)  # the epoch a cap stopped midway counts as begun
            self.say(f"epoch {epoch} step {state.step}: loss {means.get('loss', float('nan')):.3f}, "
                     f"AP50 {metrics['AP50']:.3f}, AP {metrics['AP']:.3f} ({self.cfg.profile} profile)"
                     + (f"; stopped by {stopped}" if stopped else ""))
        self.checkpoint(state, finished=bool(stopped))
        runfolder.write_steps(self.out, state.steps)

    def checkpoint(self, state: TrainState, finished: bool = False) -> None:
        state.finished = finished
        ckpt.save_checkpoint({**state.state_dict(), "config": self.cfg.to_dict(), "classes": self.classes,
                              "processes": self.world}, self.out / "checkpoints", state.step, self.cfg.train.keep_last)
