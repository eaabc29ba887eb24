"""How long a chapter takes on a Colab GPU: the estimate a chapter prints before it trains, and the
measured speed a run prints once it has warmed up.

Until a T4 has been measured (``python -m detrlib bench gpu --out results/gpu-<name>.json``), the
seconds per step are an estimate from DETR's published training time: DETR-R50 took about 85 hours
for 500 COCO epochs on 32 V100s with 2 images each (facebookresearch/detr#283), about 0.33 s per
step of 2 images in fp32. The ``gpu`` profile's step has 4 images at about 0.65 of DETR's pixels,
and a T4 in fp16 does roughly 0.6 of a V100's fp32 work: about 0.6 s per step. A run prints what
it measures after :data:`WARMUP_STEPS` steps, and ``train.max_minutes`` stops a slower GPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from detrlib.config import Config

T4_STEP_SECONDS = {"gpu": 0.6, "full": 0.8}  # estimates (see above); full: DETR's 480-800 scales
T4_EVAL_IMAGE_SECONDS = 0.08  # inference at 640 px in fp16, with loading: an estimate
VOC07_LONGTAIL_IMAGES = 2500  # about what the exp50 subset of VOC 2007 trainval keeps: an estimate
WARMUP_STEPS = 20  # steps a run takes before it prints its measured speed
SETUP_MINUTES = 3.0  # installing detrlib, downloading VOC 2007 (0.9 GB) and the COCO checkpoint
INSTALL_MINUTES = 1.0  # installing detrlib alone


@dataclass(frozen=True)
class Chapter:
    """What a chapter does on a GPU: the runs it trains (by name, see :func:`run_config`) and the
    minutes of other GPU work (evaluations, timed steps), with what that work is."""

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
    """The configuration of a chapter run: ``denoising`` is the profile itself, ``vanilla`` turns
    denoising off, ``usage-pruned`` starts from the COCO checkpoint with its most used queries
    first (chapter 6 writes that file; see :func:`detrlib.prune.usage_ordered_checkpoint`)."""
    if name == "denoising":
        return cfg
    if name == "vanilla":
        return cfg.replace(**{"model.dn_groups": 0})
    if name == "usage-pruned":
        from detrlib.prune import usage_ordered_path

        return cfg.replace(**{"train.init_checkpoint": str(usage_ordered_path(cfg))})
    raise ValueError(f"unknown chapter run {name!r}: choose one of denoising, vanilla, usage-pruned")


def measured_step_seconds(profile: str, results_dir: str | Path | None = None) -> float | None:
    """Seconds per training step of ``profile`` measured on a T4 by ``bench gpu --out``, if any."""
    from detrlib.bench.gpu import read_results

    for result in read_results(results_dir):
        if "T4" in result["gpu"]:
            for row in result["rows"]:
                if row.get("profile") == profile and row.get("precision", "").startswith("amp"):
                    return 1 / row["train steps/s"]
    return None


def step_seconds(profile: str) -> tuple[float, str]:
    """Seconds per step on a T4 and where the number comes from (``measured`` or ``estimate``)."""
    measured = measured_step_seconds(profile)
    if measured is not None:
        return measured, "measured"
    return T4_STEP_SECONDS.get(profile, T4_STEP_SECONDS["gpu"]), "estimate"


def evaluations(cfg: Config, train_images: int = VOC07_LONGTAIL_IMAGES) -> int:
    """Evaluations a run makes: one per ``eval_every`` epochs it reaches, and one at its end."""
    t = cfg.train
    return max(1, math.ceil(t.total_steps(train_images) / t.steps_per_epoch(train_images) / t.eval_every))


def eval_minutes(cfg: Config) -> float:
    images = cfg.data.val_subset or 4952  # VOC 2007 test
    return images * T4_EVAL_IMAGE_SECONDS / 60


def run_minutes(cfg: Config, seconds_per_step: float | None = None) -> float:
    """Minutes of one run on a T4, evaluations included, at most its ``max_minutes`` (plus the
    final evaluation that ends a capped run)."""
    t = cfg.train
    sps = seconds_per_step or step_seconds(cfg.profile)[0]
    minutes = t.total_steps(VOC07_LONGTAIL_IMAGES) * sps / 60 + evaluations(cfg) * eval_minutes(cfg)
    return min(minutes, t.max_minutes + eval_minutes(cfg)) if t.max_minutes else minutes


def chapter_minutes(chapter: str, cfg: Config, done=lambda run_cfg: False) -> float:
    """A chapter's minutes on a T4: setting up, its runs that ``done`` does not find finished, and
    its other work."""
    plan = CHAPTERS[chapter]
    runs = sum(run_minutes(run_config(name, cfg)) for name in plan.runs if not done(run_config(name, cfg)))
    return (SETUP_MINUTES if plan.downloads else INSTALL_MINUTES) + runs + plan.other_minutes


def chapter_plan(chapter: str, cfg: Config) -> str:
    """What a chapter will train on this profile and how long it takes on a T4, for the chapter to
    print before its first training cell. Runs already finished (on Drive, or by an earlier
    chapter) are reused and cost nothing."""
    from detrlib.runfolder import is_finished, run_dir

    plan = CHAPTERS[chapter]
    sps, source = step_seconds(cfg.profile)
    lines = [f"On a T4 ({source}: {sps:.2f} s per training step of {cfg.train.batch_size} images):"]
    for name in plan.runs:
        run_cfg = run_config(name, cfg)
        if is_finished(run_dir(run_cfg)):
            lines.append(f"  run {name:<14} finished earlier, reused: 0 min")
        else:
            steps = run_cfg.train.max_steps
            cap = f" (never more than {run_cfg.train.max_minutes:g})" if run_cfg.train.max_minutes else ""
            lines.append(f"  run {name:<14} {steps} steps + {evaluations(run_cfg)} evaluations of "
                         f"{run_cfg.data.val_subset or 'all'} images: about {run_minutes(run_cfg):.0f} min{cap}")
    lines.append(f"  {plan.other}: about {plan.other_minutes:.0f} min")
    if plan.downloads:
        lines.append(f"  setting up (install, downloads): about {SETUP_MINUTES:.0f} min")
    else:
        lines.append(f"  installing detrlib: about {INSTALL_MINUTES:.0f} min")
    total = chapter_minutes(chapter, cfg, done=lambda c: is_finished(run_dir(c)))
    lines.append(f"expected: about {total:.0f} minutes for the whole chapter")
    return "\n".join(lines)


def progress_line(seconds_per_step: float, device: str, steps_left: int, cfg: Config,
                  elapsed_s: float) -> str:
    """What a run prints after its warm-up: its measured speed, and how long the rest takes."""
    minutes = steps_left * seconds_per_step / 60
    line = (f"measured {seconds_per_step:.3f} s per step on {device}: the remaining {steps_left} steps "
            f"take about {minutes:.1f} min")
    if cfg.profile in T4_STEP_SECONDS:
        sps, source = step_seconds(cfg.profile)
        line += f" (T4 {source}: {sps:.2f} s per step)"
    cap = cfg.train.max_minutes
    if cap and elapsed_s / 60 + minutes > cap:
        line += f"; the {cap:g}-minute cap (train.max_minutes) ends the run before that"
    return line


def readme_table(cfg: Config) -> list[dict]:
    """Each chapter's estimated T4 minutes when no earlier run is reused (chapters run in a fresh
    session each), and when earlier chapters' runs are found on Drive."""
    rows, trained = [], set()
    for chapter in CHAPTERS:
        alone = chapter_minutes(chapter, cfg)
        in_order = chapter_minutes(chapter, cfg, done=lambda c: c.key() in trained)
        trained |= {run_config(name, cfg).key() for name in CHAPTERS[chapter].runs}
        rows.append({"chapter": chapter, "alone": round(alone), "after the earlier chapters": round(in_order)})
    return rows
