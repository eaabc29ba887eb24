"""``python -m detrlib bench conditional [--profile quick] [--seeds 0 1] [--out FILE]``: Conditional DETR against
DETR, trained and timed on one machine.

Four configurations of the profile, each trained with the profile's step budget for every seed by
:func:`~detrlib.engine.train` (a run folder keyed by its configuration: a finished run is reused, an interrupted one
resumes): ``vanilla`` (DETR without denoising), ``+DN`` (DETR with the profile's denoising groups, chapter 5),
``Conditional`` (Conditional DETR as published, :data:`~detrlib.model.conditional.CONDITIONAL_DETR`) and
``Conditional + DN``, whose denoising queries pass through the same decoder, their reference points coming from the
shared head like every query's.

The file keeps each run's AP@0.5 at every evaluation, and the seconds per training step of the four, timed taking
turns on one batch of the profile's size in the precision its runs train in (:func:`~detrlib.bench.step.detrlib_step`),
with the machine, date and command. :func:`table` reads from it, per seed, the final AP@0.5 and the first evaluated
step at which a configuration reaches vanilla's final AP@0.5; :func:`plot_curves` draws the curves.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import statistics
from pathlib import Path

from detrlib.bench import benchmark, format_table, random_batch, take_turns
from detrlib.config import Config, profile_settings
from detrlib.environment import machine
from detrlib.errors import ConfigError, ExistingFileError


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", choices=["quick", "smoke"], default="quick",
                        help="the profile whose model, data and step budget every run uses (default quick)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (default 0 1)")
    parser.add_argument("--repeats", type=int, default=10, help="timed training steps per configuration (default 10)")
    parser.add_argument("--out", help="also write the runs' curves, the step times, the machine, date and command "
                                      "to this JSON file (results/quick-conditional.json is what the book shows)")


def configurations(cfg: Config) -> dict[str, dict]:
    """The four configurations, as changes to the profile ``cfg``."""
    from detrlib.model.conditional import CONDITIONAL_DETR

    groups = cfg.model.dn_groups or 5
    return {"vanilla": {"model.dn_groups": 0}, "+DN": {"model.dn_groups": groups},
            "Conditional": {**CONDITIONAL_DETR, "model.dn_groups": 0},
            "Conditional + DN": {**CONDITIONAL_DETR, "model.dn_groups": groups}}


@benchmark("conditional", add_arguments=_arguments,
           help="Conditional DETR vs DETR, each with and without denoising: AP@0.5 curves per seed at the "
                "profile's step budget, steps to vanilla's final AP@0.5, seconds per training step side by side")
def run(args: argparse.Namespace) -> list[dict]:
    if args.out and Path(args.out).exists():
        raise ExistingFileError(f"{args.out} already exists: choose another --out (results are never overwritten)")
    # the profile itself (DETRLIB_PROFILE and DETRLIB_SET do not apply), without its time cap: on a busy machine
    # the cap would end the slower configurations earlier, and the curves would compare unequal budgets
    cfg = profile_settings(args.profile).replace(**{"train.max_minutes": 0})
    command = "python -m detrlib " + shlex.join(getattr(args, "argv", ["bench", "conditional"]))
    results = measure(cfg, args.seeds, args.repeats, command)
    if args.out:
        from detrlib.results import refresh_index
        from detrlib.runfolder import to_json

        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(json.loads(to_json(results)), indent=1) + "\n")
        refresh_index(out)
        print(f"wrote {out}")
    print(format_table(evaluations_table(results), title="AP@0.5 at each evaluation"))
    return table(results)


def measure(cfg: Config, seeds: list[int], repeats: int, command: str) -> dict:
    """Train (or reuse) every configuration for every seed, time a step of each, and return the results as
    :func:`table` and :func:`plot_curves` read them."""
    import torch

    from detrlib.bench.step import detrlib_step
    from detrlib.data import build_dataset
    from detrlib.engine import train
    from detrlib.precision import precision
    from detrlib.runfolder import read_metrics

    if not seeds:
        raise ConfigError("bench conditional needs at least one seed (--seeds 0 1)")
    steps = cfg.train.total_steps(len(build_dataset(cfg.data, "train")))
    plan = configurations(cfg)
    rows = []
    for name, changes in plan.items():
        folders = [train(cfg.replace(**changes, **{"train.seed": seed}), progress=False) for seed in seeds]
        histories = [read_metrics(folder) for folder in folders]
        rows.append({"name": name, "changes": changes, "runs": [folder.name for folder in folders],
                     "curves": [[[h["step"], h["AP50"]] for h in history] for history in histories],
                     "final_AP": [history[-1]["AP"] for history in histories],
                     "train_time_s": [history[-1]["train_time_s"] for history in histories]})

    chosen = precision(cfg.train.amp, torch.device("cpu"))
    batch, size, objects = cfg.train.batch_size, max(cfg.data.train_scales), (2, 4)
    images, mask, targets = random_batch(batch, size, cfg.model.num_classes, objects)
    jobs = {name: detrlib_step(cfg.replace(**changes), images, mask, targets, chosen.dtype)
            for name, changes in plan.items()}
    times = take_turns(jobs, repeats, warmup=2)
    for row in rows:
        row["s_per_step"] = times[row["name"]]
    return {"command": command, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(), "profile": cfg.profile, "config": cfg.describe(), "seeds": list(seeds),
            "budget_steps": steps,
            "step_timing": {"batch": batch, "size": size, "objects": list(objects), "repeats": repeats,
                            "precision": chosen.name, "device": "cpu"},
            "rows": rows}


def steps_to_reach(curve: list[list[float]], target: float) -> int | None:
    """The first evaluated step whose AP@0.5 reaches ``target``, or None."""
    return next((int(step) for step, ap in curve if ap >= target), None)


def table(results: dict) -> list[dict]:
    """One row per configuration: the final AP@0.5 of each seed and their mean, the steps each seed took to reach
    vanilla's final AP@0.5 (that seed's), and the seconds per training step, also as a multiple of vanilla's."""
    vanilla = {r["name"]: r for r in results["rows"]}["vanilla"]
    targets = [curve[-1][1] for curve in vanilla["curves"]]
    out = []
    for r in results["rows"]:
        finals = [curve[-1][1] for curve in r["curves"]]
        steps = [steps_to_reach(curve, target) for curve, target in zip(r["curves"], targets)]
        reached = " / ".join("not reached" if n is None else str(n) for n in steps)
        out.append({"configuration": r["name"], **{f"AP@0.5 seed {s}": ap for s, ap in zip(results["seeds"], finals)},
                    "mean AP@0.5": statistics.fmean(finals), "steps to vanilla's final AP@0.5": reached,
                    "s/step": r["s_per_step"], "x vanilla": r["s_per_step"] / vanilla["s_per_step"]})
    return out


def evaluations_table(results: dict) -> list[dict]:
    """AP@0.5 at each evaluation: one row per configuration and seed, one column per step."""
    return [{"configuration": r["name"], "seed": seed, **{f"step {int(s)}": ap for s, ap in curve}}
            for r in results["rows"] for seed, curve in zip(results["seeds"], r["curves"])]


def plot_curves(results: dict, ax=None):
    """Each run's AP@0.5 against the optimizer step (a colour per configuration, a line per seed), with vanilla's
    final AP@0.5 (mean of the seeds) as a dashed line. Returns the axes."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(7, 3.6))[1]
    vanilla = {r["name"]: r for r in results["rows"]}["vanilla"]
    for k, r in enumerate(results["rows"]):
        for s, curve in enumerate(r["curves"]):
            steps, ap = zip(*curve)
            ax.plot(steps, ap, "o-", color=f"C{k}", ms=3, alpha=0.9 if s == 0 else 0.55,
                    label=r["name"] if s == 0 else None)
    target = statistics.fmean(curve[-1][1] for curve in vanilla["curves"])
    ax.axhline(target, color="C0", ls="--", lw=1, label="vanilla's final AP@0.5 (mean)")
    ax.set(xlabel="optimizer step", ylabel="AP@0.5")
    ax.set_title(f"{results['profile']} profile, seeds {', '.join(map(str, results['seeds']))}, "
                 f"{results['machine']['cpu']}", fontsize=9)
    ax.legend(fontsize=8)
    return ax
