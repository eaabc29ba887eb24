"""``python -m detrlib bench gpu``: fp32 against mixed precision on a CUDA GPU, in under 5 minutes.

For the ``gpu`` profile's model (the reference project's: DETR-R50, 6 encoder / 4 decoder layers, 50 queries,
denoising) and DETR's own (6 / 6 / 100, no denoising), both for VOC's 20 classes, at ``--size``² inputs: training
steps per second (the engine's real step: forward, Hungarian matching and losses in fp32, backward, clipping, AdamW)
and their peak memory, then inference seconds per image at batch 1 and 8 (see ``bench infer``). AMP follows
:func:`detrlib.precision.precision`: bf16 on compute capability 8.0 and later, fp16 with a ``GradScaler`` below (a
T4). Steps are timed with the settings ``train`` uses (:func:`detrlib.engine.seed_everything`: deterministic
algorithms, a fixed cuBLAS workspace). Random weights and random boxes: speed and memory do not depend on them.
``--out results/gpu-<name>.json`` keeps the table with the machine, GPU, date, command and those settings; chapters 7
and 8 show every such file, and :mod:`detrlib.budget` takes a T4's step time from it. On a machine without CUDA it
says so and measures nothing.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

from detrlib import config, results
from detrlib.bench import benchmark, random_batch
from detrlib.bench.infer import inference_seconds_per_image
from detrlib.config import device_name
from detrlib.environment import machine
from detrlib.errors import ExistingFileError

if TYPE_CHECKING:
    import torch


def configurations(gpu) -> dict:
    """The ``gpu`` profile's model (4 decoder layers, 50 queries, denoising) and DETR's own (6, 100, none), by name."""
    m = gpu.model
    return {f"R50 {m.enc_layers}/{m.dec_layers}/{m.num_queries}" + (f" DN{m.dn_groups}" if m.dn_groups else ""): gpu,
            "R50 6/6/100": gpu.replace(**{"model.dec_layers": 6, "model.num_queries": 100, "model.dn_groups": 0})}


def read_results(folder: str | Path | None = None) -> list[dict]:
    """Every ``gpu-*.json`` that ``bench gpu --out`` wrote into ``folder`` (default: the repository's,
    :func:`detrlib.results.find`), oldest first."""
    paths = sorted(Path(folder).glob("gpu-*.json")) if folder else results.find("gpu-*.json")[0]
    return sorted((json.loads(path.read_text()) for path in paths), key=lambda r: r["date"])


def results_tables(folder: str | Path | None = None) -> str:
    """Every measured GPU table of ``folder`` (default: the repository's) as text, each labelled with its GPU, date
    and command; or a sentence saying that there is none yet, and why."""
    from detrlib.bench import format_table

    measured = read_results(folder)
    if not measured:
        why = "" if folder else results.find("gpu-*.json")[1]
        where = f"in {folder}" if folder else f"in {results.where()}"
        return (f"No GPU measurement is {where} yet{f'; {why}' if why else ''}. On a CUDA GPU, `python -m "
                "detrlib bench gpu --out results/gpu-<name>.json` (or `bash scripts/gpu_check.sh`) measures "
                "one, and this table shows it.")
    return "\n\n".join(format_table([{k: v for k, v in row.items() if k != "profile"} for row in r["rows"]],
                                     title=f"{r['gpu']}, measured {r['date']} by `{r['command']}`")
                        for r in measured)


def write_results(rows: list[dict], out: str | Path, command: str, settings: dict | None = None) -> Path:
    """Write ``rows`` with the machine, GPU, date, command and the training ``settings`` they were measured with as
    JSON (to a temporary file, then renamed), and update the folder's index."""
    from detrlib.checkpoint import atomic_write_text

    info = machine()
    result = {"gpu": info.get("gpu", "none"), "date": datetime.date.today().isoformat(), "command": command,
              "machine": info, "settings": settings or {}, "rows": rows}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    results.refresh_index(out)
    return out


def training_speed(cfg, device: torch.device, size: int, batch: int, steps: int = 20, warmup: int = 5) -> dict:
    """Steps per second (median step after ``warmup`` steps), peak memory and the last loss of the engine's training
    step for ``cfg`` (a :class:`~detrlib.config.Config`, its ``train.amp`` choosing the precision), and the model."""
    import torch

    from detrlib.criterion import build_criterion
    from detrlib.engine import new_train_state, to_device, train_one_epoch
    from detrlib.memory import peak_memory_mb, reset_peak_memory
    from detrlib.model import build_model

    torch.manual_seed(0)
    model = build_model(cfg.model).to(device)
    criterion = build_criterion(cfg).to(device)
    state = new_train_state(model, cfg.train, steps_per_epoch=warmup + steps)
    data = [to_device(*random_batch(batch, size, cfg.model.num_classes), device)] * (warmup + steps)
    reset_peak_memory(device)
    train_one_epoch(state, criterion, data, cfg.train, progress=False)
    seconds = statistics.median(row[3] for row in state.steps[warmup:])
    return {"steps/s": 1 / seconds, "peak MiB": peak_memory_mb(device), "loss": state.steps[-1][1], "model": model}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=640,
                        help="square input size (default 640: about the gpu profile's mean image area)")
    parser.add_argument("--batch", type=int, help="training batch size (default: the gpu profile's)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps and calls first (default 5)")
    parser.add_argument("--repeats", type=int, default=20, help="timed inference calls (default 20)")
    parser.add_argument("--out", help="also write the table, machine, GPU, date and command to this JSON file "
                                      "(results/gpu-<name>.json is what the book shows)")


@benchmark("gpu", "CUDA GPU: fp32 vs AMP training steps/s and memory, inference s/image (R50 6/4/50 and 6/6/100)",
           add_arguments)
def run(args: argparse.Namespace) -> list[dict]:
    if not config.has_cuda():
        print("bench gpu: no CUDA device on this machine, so there is nothing to measure. Run it on a GPU "
              "(on Colab: Runtime > Change runtime type > GPU); `python -m detrlib bench infer` times the CPU.")
        return []
    if getattr(args, "out", None) and Path(args.out).exists():
        raise ExistingFileError(f"{args.out} already exists: choose another --out (results are never overwritten)")
    from detrlib.engine import deterministic_settings, seed_everything

    seed_everything(0)  # the settings train() runs with, deterministic algorithms included
    settings = deterministic_settings()
    print("timed with the settings of detrlib's train(): " + ", ".join(f"{k} {v}" for k, v in settings.items()))
    rows = measure(args)
    if getattr(args, "out", None):
        command = "python -m detrlib " + shlex.join(getattr(args, "argv", ["bench", "gpu", "--out", args.out]))
        print(f"wrote {write_results(rows, args.out, command, settings)}")
    return rows


def measure(args: argparse.Namespace) -> list[dict]:
    import torch

    from detrlib.config import profile_settings
    from detrlib.precision import precision

    device = torch.device("cuda")
    cfg = profile_settings("gpu")
    batch = args.batch or cfg.train.batch_size
    amp = precision("auto", device)
    precisions = {"fp32": "off", f"amp {amp.name}": "auto"}
    print(f"{device_name(device)}, torch {torch.__version__}: training batch {batch} at {args.size}², "
          f"median of {args.steps} steps after {args.warmup}; inference median of {args.repeats} calls; "
          f"AMP is {amp.why}")
    start, rows = time.perf_counter(), []
    for name, run_cfg in configurations(cfg).items():
        base = None
        for label, setting in precisions.items():
            result = training_speed(run_cfg.replace(**{"train.amp": setting}), device, args.size, batch,
                                    args.steps, args.warmup)
            base = base or result["steps/s"]
            row = {"config": name, "profile": "gpu" if run_cfg is cfg else "", "precision": label,
                   "train steps/s": result["steps/s"], "vs fp32": result["steps/s"] / base,
                   "peak MiB": result["peak MiB"], "loss": result["loss"]}
            for b in (1, 8):
                row[f"infer s/img b{b}"] = inference_seconds_per_image(
                    result["model"], args.size, b, precision(setting, device).dtype, device, args.repeats, args.warmup)
            rows.append(row)
            del result
            torch.cuda.empty_cache()
    print(f"measured in {time.perf_counter() - start:.0f} s")
    return rows
