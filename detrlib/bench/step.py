"""``python -m detrlib bench step``: seconds per training step of DETR-R50, detrlib vs Hugging Face.

A step is everything the engine does per batch: forward, Hungarian matching, the set loss with
auxiliary losses at every decoder layer, backward, gradient clipping and an AdamW update. Both
models have random weights, COCO's 91 classes, and the same batch of images and boxes.
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

from detrlib.bench import alternate, benchmark, hf_detr


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--size", type=int, default=512, help="square image size (default 512)")
    parser.add_argument("--batch", type=int, default=2, help="images per step (default 2)")
    parser.add_argument("--objects", type=int, default=6, help="objects per image (default 6)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps (the median is shown)")
    parser.add_argument("--no-hf", action="store_true", help="skip Hugging Face even when installed")


def _batch(batch: int, size: int, objects: int, num_classes: int = 91):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=g)
    centres = torch.rand(batch, objects, 2, generator=g) * 0.6 + 0.2
    sizes = torch.rand(batch, objects, 2, generator=g) * 0.3 + 0.05
    boxes = torch.cat([centres, sizes], -1)
    labels = torch.randint(0, num_classes, (batch, objects), generator=g)
    return images, [{"boxes": b, "labels": l} for b, l in zip(boxes, labels)]


def detrlib_step(model, criterion, optimizer, images, targets, clip: float = 0.1):
    """One training step as :func:`detrlib.engine.train_one_epoch` takes it."""
    from detrlib.engine import weighted_loss

    def step():
        outputs = model(images)
        loss = weighted_loss(criterion(outputs, targets), criterion.weight_dict)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()

    return step


def hf_step(model, optimizer, images, targets, clip: float = 0.1):
    labels = [{"class_labels": t["labels"], "boxes": t["boxes"]} for t in targets]

    def step():
        loss = model(pixel_values=images, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()

    return step


@benchmark("step", add_arguments=_arguments,
           help="seconds per DETR-R50 training step on CPU (forward, matching, loss, backward, AdamW), detrlib vs Hugging Face")
def run(args: argparse.Namespace) -> list[dict]:
    from detrlib.config import Config, ModelConfig
    from detrlib.criterion import build_criterion
    from detrlib.engine import make_optimizer
    from detrlib.model import build_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(backbone="resnet50", num_classes=91))
    images, targets = _batch(args.batch, args.size, args.objects)
    model = build_model(cfg.model).train()
    ours = detrlib_step(model, build_criterion(cfg), make_optimizer(model, cfg.train), images, targets)

    theirs, why = (None, "Hugging Face rows skipped (--no-hf)") if args.no_hf else hf_detr(auxiliary_loss=True)
    if why:
        print(why)
    hf = None
    if theirs is not None:
        theirs.train()
        hf = hf_step(theirs, torch.optim.AdamW(theirs.parameters(), lr=1e-4, weight_decay=1e-4), images, targets)
    mine, other = alternate(ours, hf, args.repeats)
    row = {"job": f"train step b{args.batch} {args.size}² ({args.objects} objects/image)", "detrlib s": mine}
    if other is not None:
        row["HF s"] = other
        row["HF / detrlib"] = other / mine
    return [row]
