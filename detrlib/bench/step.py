"""``python -m detrlib bench step [--dn]``: seconds per training step of detrlib's DETR on the CPU.

A step is what the engine does per batch: forward with the targets, the criterion, backward,
gradient clipping and an AdamW step, on random images and boxes (speed does not depend on the
values). ``--profile full`` is DETR-R50 as the full profile trains it (batch 2, 512², 100 queries,
6 decoder layers); ``--profile quick`` is the quick profile's small model at its own batch and
image size. With ``--dn`` the same step also runs with ``--dn-groups`` denoising groups, the two
configurations taking turns, and the table gives denoising's overhead. Each number is the median of
``--repeats`` steps after a warm-up.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from detrlib.bench import benchmark


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", choices=["full", "quick"], default="full",
                        help="full: DETR-R50, batch 2, 512² (default); quick: the quick profile's model and batch")
    parser.add_argument("--batch", type=int, help="batch size (default: 2 for full, the profile's for quick)")
    parser.add_argument("--size", type=int, help="square image size (default: 512 for full, the profile's for quick)")
    parser.add_argument("--objects", type=int, nargs="+", default=[2, 4],
                        help="objects per image, cycled over the batch (default 2 4)")
    parser.add_argument("--dn", action="store_true", help="also time the step with denoising queries")
    parser.add_argument("--dn-groups", type=int, default=5, help="denoising groups with --dn (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per row (the median is shown)")


def _batch(batch: int, size: int, objects: list[int], num_classes: int):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=g)
    mask = torch.zeros(batch, size, size, dtype=torch.bool)
    targets = []
    for i in range(batch):
        n = objects[i % len(objects)]
        centres = torch.rand(n, 2, generator=g) * 0.6 + 0.2
        sizes = torch.rand(n, 2, generator=g) * 0.3 + 0.1
        targets.append({"labels": torch.randint(0, num_classes, (n,), generator=g),
                        "boxes": torch.cat([centres, sizes], 1)})
    return images, mask, targets


def _step_fn(cfg, images, mask, targets):
    """One training step of a fresh model built from ``cfg``, as a callable."""
    from detrlib.criterion import build_criterion
    from detrlib.engine import make_optimizer
    from detrlib.model import build_model

    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    criterion = build_criterion(cfg)
    optimizer = make_optimizer(model, cfg.train)

    def step():
        outputs = model(images, mask, targets=targets)
        loss = criterion.total(criterion(outputs, targets))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_max_norm)
        optimizer.step()

    return step


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@benchmark("step", add_arguments=_arguments,
           help="seconds per training step (forward, loss, backward, AdamW) on CPU; --dn adds denoising's overhead")
def run(args: argparse.Namespace) -> list[dict]:
    from detrlib.config import get_profile

    torch.set_num_threads(args.threads)
    cfg = get_profile(args.profile)
    if args.profile == "full":
        batch, size = args.batch or 2, args.size or 512
    else:
        batch, size = args.batch or cfg.train.batch_size, args.size or max(cfg.data.train_scales)
    images, mask, targets = _batch(batch, size, args.objects, cfg.model.num_classes)
    name = f"{cfg.model.backbone} d{cfg.model.hidden_dim} b{batch} {size}²"
    groups = [0] + ([args.dn_groups] if args.dn else [])
    steps = {g: _step_fn(cfg.replace(**{"model.dn_groups": g}), images, mask, targets) for g in groups}
    for step in steps.values():
        step()  # warm-up
    times = {g: [] for g in groups}
    for _ in range(args.repeats):  # take turns, so a busy moment hurts both alike
        for g, step in steps.items():
            times[g].append(_seconds(step))

    pad = max(args.objects[i % len(args.objects)] for i in range(batch))
    rows = []
    for g in groups:
        row = {"model": name, "dn_groups": g, "queries": cfg.model.num_queries + g * pad,
               "s/step": statistics.median(times[g])}
        if g:
            row["overhead"] = f"{row['s/step'] / rows[0]['s/step'] - 1:+.1%}"
        rows.append(row)
    return rows
