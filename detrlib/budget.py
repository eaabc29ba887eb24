"""How long a chapter takes on a Colab GPU: the estimate a chapter prints before it trains, and the measured speed a
run prints once it has warmed up.

A T4's seconds per step are derived once, here, and quoted from here (chapter 8 prints :func:`derivation`; the
README's table is :func:`readme_table`'s). One published number starts it: DETR-R50 trained 300 COCO epochs (118,287
images) in 3 days on 16 V100 GPUs in fp32, 4 images per GPU (Carion et al. 2020, section 4), i.e.
:data:`V100_IMAGE_SECONDS` per training image, data loading and evaluations included. A profile's image costs that
times its share of DETR's pixels (its training scales against DETR's 480-800), and a GPU is *assumed* to run mixed
precision at a multiple of a V100 in fp32 (:data:`SPEED_VS_V100`: a T4 in fp16 has four times a V100's fp32 rate on
its tensor cores, but a third of its memory bandwidth and a 70 W power limit). The reference project's changes
(fewer decoder layers and queries, denoising) are assumed to cancel out.

Once a T4 has been measured (``python -m detrlib bench gpu --out results/gpu-<name>.json``, committed), its step time
replaces the estimate (:func:`step_seconds`). A run prints what it measures after :data:`~detrlib.engine.WARMUP_STEPS`
steps, and ``train.max_minutes`` stops a slower GPU.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from detrlib import results
from detrlib.config import Config, DataConfig
from detrlib.errors import ConfigError

DETR_TRAINING = {"epochs": 300, "images": 118_287, "days": 3, "gpus": 16}  # Carion et al. 2020: COCO, V100s, fp32
V100_IMAGE_SECONDS = DETR_TRAINING["days"] * 86400 * DETR_TRAINING["gpus"] / (DETR_TRAINING["epochs"] * DETR_TRAINING["images"])
SPEED_VS_V100 = {"T4": 0.7, "A100": 3.0}  # assumed: mixed precision (T4 fp16, A100 bf16) against a V100 in fp32
EVAL_SHARE = 1 / 3  # an evaluated image costs about a third of a trained one (a forward pass, no backward)
VOC07_LONGTAIL_IMAGES = 2500  # about what the exp50 subset of VOC 2007 trainval keeps: an estimate
SETUP_MINUTES = 3.0  # installing detrlib, downloading VOC 2007 (0.9 GB) and the COCO checkpoint
INSTALL_MINUTES = 1.0  # installing detrlib alone


def pixel_share(sides) -> float:
    """Pixels of images resized to the shorter ``sides`` against DETR's training scales (same aspect)."""
    detr = DataConfig().train_scales
    return statistics.fmean(s * s for s in sides) / statistics.fmean(s * s for s in detr)


def estimated_step_seconds(cfg: Config, gpu: str = "T4") -> float:
    """Seconds per optimizer step of ``cfg`` on ``gpu``, by the derivation above."""
    t = cfg.train
    images = t.batch_size * t.grad_accum_steps
    return V100_IMAGE_SECONDS * pixel_share(cfg.data.train_scales) * images / SPEED_VS_V100[gpu]


def epoch_minutes(cfg: Config, images: int, gpu: str = "T4") -> float:
    """Estimated minutes of one epoch of ``images`` training images of ``cfg`` on ``gpu``."""
    return images / (cfg.train.batch_size * cfg.train.grad_accum_steps) * estimated_step_seconds(cfg, gpu) / 60


def derivation(cfg: Config) -> str:
    """The T4 step-time estimate of ``cfg``'s profile, written out from its source to its result."""
    d, t, sides = DETR_TRAINING, cfg.train, cfg.data.train_scales
    assumed = "; ".join(f"{gpu} {x:g} times" for gpu, x in SPEED_VS_V100.items())
    return "\n".join([
        f"DETR paper: DETR-R50 trained {d['epochs']} epochs of COCO ({d['images']:,} images) in {d['days']} days on "
        f"{d['gpus']} V100 GPUs in fp32: {V100_IMAGE_SECONDS:.3f} V100-seconds per training image",
        f"{cfg.profile} profile: shorter sides {min(sides)}-{max(sides)} px, {pixel_share(sides):.2f} of DETR's pixels "
        f"per image; {t.batch_size * t.grad_accum_steps} images per step",
        f"assumed, mixed precision against a V100 in fp32: {assumed} as fast",
        f"estimate: {estimated_step_seconds(cfg):.2f} s per step on a T4",
    ])


@dataclass(frozen=True)
class Chapter:
    """What a chapter does on a GPU: the runs it trains (by name, see :func:`run_config`) and the minutes of other GPU
    work (evaluations, timed steps), with what that work is."""

    runs: tuple[str, ...] = ()
    other_minutes: float = 1.0
    other: str = "the chapter's cells"
    downloads: bool = True  # needs VOC and the COCO checkpoint


CHAPTERS = {
    "00_introduction": Chapter(other_minutes=0.5, downloads=False),
    "01_data": Chapter(other_minutes=1.0, other="statistics of VOC 2007 and its long-tailed subset"),
    "02_vanilla_detr": Chapter(other_minutes=1.0, other="the COCO model on a few VOC images"),
    "03_matching": Chapter(other_minutes=1.0, downloads=False),
    "04_training": Chapter(runs=("vanilla",), other_minutes=2.0, other="predictions and the resume demo"),
    "05_denoising": Chapter(runs=("vanilla", "denoising"), other_minutes=2.0, other="matching stability"),
    "06_pruning": Chapter(runs=("denoising", "usage-pruned"), other_minutes=9.0,
                          other="the COCO model pruned by layers and queries, evaluated without training"),
    "07_mixed_precision": Chapter(other_minutes=3.0, other="fp32 and AMP training steps, timed in turns"),
    "08_results": Chapter(other_minutes=1.0, downloads=False),
}


def run_config(name: str, cfg: Config) -> Config:
    """The configuration of a chapter run: ``denoising`` is the profile itself, ``vanilla`` turns denoising off,
    ``usage-pruned`` starts from the COCO checkpoint with its most used queries first (chapter 6 writes that file;
    see :func:`detrlib.prune.usage_ordered_checkpoint`)."""
    if name == "denoising":
        return cfg
    if name == "vanilla":
        return cfg.replace(**{"model.dn_groups": 0})
    if name == "usage-pruned":
        from detrlib.prune import usage_ordered_path

        return cfg.replace(**{"train.init_checkpoint": str(usage_ordered_path(cfg))})
    raise ConfigError(f"unknown chapter run {name!r}: choose one of denoising, vanilla, usage-pruned")


def measured_step_seconds(profile: str, results_dir: str | Path | None = None) -> float | None:
    """Seconds per training step of ``profile`` measured on a T4 by ``bench gpu --out``, if any (``results_dir``
    default: the repository's, :mod:`detrlib.results`)."""
    from detrlib.bench.gpu import read_results

    for result in read_results(results_dir):
        if "T4" in result["gpu"]:
            for row in result["rows"]:
                if row.get("profile") == profile and row.get("precision", "").startswith("amp"):
                    return 1 / row["train steps/s"]
    return None


def step_seconds(cfg: Config) -> tuple[float, str]:
    """Seconds per step of ``cfg`` on a T4, and where the number comes from (``measured`` or ``estimate``)."""
    measured = measured_step_seconds(cfg.profile)
    if measured is not None:
        return measured, "measured"
    return estimated_step_seconds(cfg), "estimate"


def evaluations(cfg: Config, train_images: int = VOC07_LONGTAIL_IMAGES) -> int:
    """Evaluations a run makes: one per ``eval_every`` epochs it reaches, and one at its end."""
    t = cfg.train
    return max(1, math.ceil(t.total_steps(train_images) / t.steps_per_epoch(train_images) / t.eval_every))


def eval_minutes(cfg: Config) -> float:
    """Minutes of one evaluation on a T4: its images at the validation size, a forward pass each."""
    images = cfg.data.val_subset or 4952  # VOC 2007 test
    return images * V100_IMAGE_SECONDS * pixel_share([cfg.data.val_size]) * EVAL_SHARE / SPEED_VS_V100["T4"] / 60


def run_minutes(cfg: Config, seconds_per_step: float | None = None) -> float:
    """Minutes of one run on a T4, evaluations included, at most its ``max_minutes`` (plus the final evaluation that
    ends a capped run)."""
    t = cfg.train
    sps = seconds_per_step or step_seconds(cfg)[0]
    minutes = t.total_steps(VOC07_LONGTAIL_IMAGES) * sps / 60 + evaluations(cfg) * eval_minutes(cfg)
    return min(minutes, t.max_minutes + eval_minutes(cfg)) if t.max_minutes else minutes


def chapter_minutes(chapter: str, cfg: Config, done=lambda run_cfg: False) -> float:
    """A chapter's minutes on a T4: setting up, its runs that ``done`` does not find finished, and its other work."""
    plan = CHAPTERS[chapter]
    runs = sum(run_minutes(run_config(name, cfg)) for name in plan.runs if not done(run_config(name, cfg)))
    return (SETUP_MINUTES if plan.downloads else INSTALL_MINUTES) + runs + plan.other_minutes


def chapter_plan(chapter: str, cfg: Config) -> str:
    """What a chapter will train on this profile and how long it takes on a T4, for the chapter to print before its
    first training cell. A run already finished (on Drive, or by an earlier chapter) is reused and costs nothing; one
    interrupted (a disconnect, a closed tab) resumes from its newest checkpoint, and only its remaining steps count."""
    from detrlib.checkpoint import load_latest
    from detrlib.config import pick_device
    from detrlib.precision import precision
    from detrlib.runfolder import run_dir
    from detrlib.train_state import finished_reason

    plan = CHAPTERS[chapter]
    sps, source = step_seconds(cfg)
    lines = [f"this machine trains in {precision(cfg.train.amp, pick_device()).why}",
             f"On a T4 ({source}: {sps:.2f} s per training step of {cfg.train.batch_size} images):"]
    if source == "estimate":
        why = results.find("gpu-*.json")[1]
        lines.insert(1, f"no T4 measurement in {results.where()}{f'; {why}' if why else ''}: "
                        "the minutes below use detrlib.budget's estimate")
    total = (SETUP_MINUTES if plan.downloads else INSTALL_MINUTES) + plan.other_minutes
    for name in plan.runs:
        run_cfg = run_config(name, cfg)
        t = run_cfg.train
        saved = load_latest(run_dir(run_cfg) / "checkpoints")
        cap = f" (never more than {t.max_minutes:g})" if t.max_minutes else ""
        if finished_reason(saved, t):
            lines.append(f"  run {name:<14} finished earlier, reused: 0 min")
            continue
        minutes = run_minutes(run_cfg)
        if saved:
            done = saved["step"] / max(t.total_steps(VOC07_LONGTAIL_IMAGES), 1)
            minutes *= max(0.0, 1 - done)
            if t.max_minutes:
                minutes = min(minutes, max(0.0, t.max_minutes - saved.get("wall_time", 0) / 60) + eval_minutes(run_cfg))
            lines.append(f"  run {name:<14} interrupted at step {saved['step']}, resumes from its checkpoint: "
                         f"about {minutes:.0f} min left{cap}")
        else:
            lines.append(f"  run {name:<14} {t.max_steps} steps + {evaluations(run_cfg)} evaluations of "
                         f"{run_cfg.data.val_subset or 'all'} images: about {minutes:.0f} min{cap}")
        total += minutes
    lines.append(f"  {plan.other}: about {plan.other_minutes:.0f} min")
    lines.append(f"  setting up (install, downloads): about {SETUP_MINUTES:.0f} min" if plan.downloads
                 else f"  installing detrlib: about {INSTALL_MINUTES:.0f} min")
    lines.append(f"expected: about {total:.0f} minutes for the whole chapter")
    return "\n".join(lines)


def cap_note(histories: dict[str, list[dict]], cfg: Config) -> str:
    """A page's sentence on the runs (name -> their ``metrics.jsonl`` rows) that the wall-clock cap
    (``train.max_minutes``) stopped before the end of ``cfg``'s budget, as their numbers come from a shorter run than
    the page's prose describes; empty when none was."""
    capped = {name: rows[-1] for name, rows in histories.items() if rows and rows[-1].get("stopped") == "max_minutes"}
    if not capped:
        return ""
    t = cfg.train
    budget = f"{t.max_steps} steps" if t.max_steps else f"{t.epochs} epochs"
    runs = " and ".join(f"the {name} run after {last['wall_time_s'] / 60:.1f} minutes, at step {last['step']}"
                        for name, last in capped.items())
    note = (f"On this machine the {cfg.profile} profile's wall-clock cap (`train.max_minutes` = {t.max_minutes:g}) "
            f"stopped {runs}, before the {budget} of the recipe: the machine trained slower than the profile "
            f"expects, so what this page shows of {'it' if len(capped) == 1 else 'them'} comes from a shorter run.")
    if len({rows[-1]["step"] for rows in histories.values() if rows}) > 1:
        note += " The runs did not train the same number of steps: compare them on the curves, step for step."
    return note


def readme_table(cfg: Config) -> list[dict]:
    """Each chapter's estimated T4 minutes when no earlier run is reused (chapters run in a fresh session each), and
    when earlier chapters' runs are found on Drive."""
    rows, trained = [], set()
    for chapter in CHAPTERS:
        alone = chapter_minutes(chapter, cfg)
        in_order = chapter_minutes(chapter, cfg, done=lambda c: c.key() in trained)
        trained |= {run_config(name, cfg).key() for name in CHAPTERS[chapter].runs}
        rows.append({"chapter": chapter, "alone": round(alone), "after the earlier chapters": round(in_order)})
    return rows
