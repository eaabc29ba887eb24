"""Everything a training run needs to continue as if it had never stopped: :class:`TrainState`."""
from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from detrlib.config import TrainConfig
from detrlib.runfolder import STEP_COLUMNS


def rng_state() -> dict:
    """Every random number generator a training step touches, as plain tensors and lists."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(mt), gauss],
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def stop_reason(cfg: TrainConfig, step: int, epoch: int, out_of_time: bool) -> str:
    """What ends a run at ``step`` and ``epoch`` (``max_steps``, ``max_minutes`` or ``epochs``), or ``""``."""
    if cfg.max_steps and step >= cfg.max_steps:
        return "max_steps"
    if out_of_time:
        return "max_minutes"
    return "epochs" if epoch >= cfg.epochs else ""


def finished_reason(saved: dict | None, cfg: TrainConfig) -> str:
    """What ended the run of the checkpoint ``saved`` when that run is finished under ``cfg``'s budget, else ``""``
    (no checkpoint, a run stopped midway, or one whose budget was raised since): the rule a run is reused by."""
    if not saved or not saved.get("finished"):
        return ""
    out_of_time = bool(cfg.max_minutes) and saved.get("wall_time", 0) >= cfg.max_minutes * 60
    return stop_reason(cfg, saved.get("step", 0), saved.get("epoch", 0), out_of_time)


def set_rng_state(state: dict) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class EpochTotals:
    """The epoch's running sums: each logged loss term's ``sums`` over ``steps`` optimizer steps, and the batches
    ``skipped`` for a non-finite loss."""

    sums: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    skipped: int = 0

    def means(self) -> dict[str, float]:
        """Each term's mean over the epoch's steps, and the skipped batches."""
        return {**{k: v / max(self.steps, 1) for k, v in self.sums.items()}, "skipped": self.skipped}


@dataclass(eq=False)
class TrainState:
    """A run's model, optimizer, learning-rate schedule and fp16 gradient scaler, and where it is.

    ``epoch`` epochs done, ``batch`` batches of the current one, ``step`` optimizer steps; ``history`` holds one dict
    per evaluation, ``steps`` a ``[step, loss, lr, seconds]`` row per optimizer step, ``totals`` the epoch's running
    sums (so that an epoch resumed midway still averages all its steps), ``matched`` the instability probe's last
    matching. ``train_time`` counts the seconds spent in training epochs, :meth:`elapsed` the wall clock over every
    session. ``net`` is what training calls: the model itself, or its DDP wrapper. ``out_of_time`` says that the run
    has reached its time cap, as every process agrees (:meth:`over_time` is this process's own clock).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None = None
    net: nn.Module | None = None
    epoch: int = 0
    batch: int = 0
    step: int = 0
    history: list = field(default_factory=list)
    steps: list = field(default_factory=list)
    totals: EpochTotals = field(default_factory=EpochTotals)
    matched: torch.Tensor | None = None
    train_time: float = 0.0
    wall_time: float = 0.0  # seconds of the earlier sessions
    finished: bool = False
    out_of_time: bool = False

    def __post_init__(self):
        self.net = self.model if self.net is None else self.net
        self.start_clock()

    def start_clock(self) -> None:
        """Count this session's wall clock from now (setting a session up is not training)."""
        self._session_start = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds of wall clock over every session."""
        return self.wall_time + time.perf_counter() - self._session_start

    def over_time(self, cfg: TrainConfig) -> bool:
        """Whether this process's clock has passed ``cfg.max_minutes``."""
        return bool(cfg.max_minutes) and self.elapsed() >= cfg.max_minutes * 60

    def stop_reason(self, cfg: TrainConfig) -> str:
        """What ends the run now (:func:`stop_reason`): the same on every process of a distributed run, since the
        clock enters only through ``out_of_time``."""
        return stop_reason(cfg, self.step, self.epoch, self.out_of_time)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict() if self.scaler else None,
                "rng": rng_state(), "epoch": self.epoch, "batch": self.batch, "step": self.step,
                "history": self.history, "train_time": self.train_time, "wall_time": self.elapsed(),
                "finished": self.finished, "epoch_totals": asdict(self.totals),
                "matched": self.matched.tolist() if self.matched is not None else None,
                "steps": torch.tensor(self.steps, dtype=torch.float64).reshape(-1, len(STEP_COLUMNS))}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (:meth:`state_dict`'s, as a checkpoint stores it), random generators included."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.epoch, self.batch, self.step = state["epoch"], state["batch"], state["step"]
        self.history, self.train_time = state["history"], state["train_time"]
        self.wall_time = state.get("wall_time", self.train_time)
        self.matched = torch.tensor(state["matched"]) if state.get("matched") is not None else None
        self.steps = state["steps"].tolist() if "steps" in state else []
        self.totals = EpochTotals(**(state.get("epoch_totals") or {}))
        self.finished = bool(state.get("finished"))
        self.start_clock()
