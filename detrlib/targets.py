"""The targets every part reads (the model's denoising, the matcher, the loss): one dict per image,
``{"boxes": [N, 4] normalized cx, cy, w, h, "labels": [N] int64}``, checked in one place."""
from __future__ import annotations

import torch


def check_targets(targets: list[dict], batch_size: int, num_classes: int) -> None:
    """Raise a clear error when ``targets`` do not fit ``batch_size`` images and ``num_classes`` classes."""
    if len(targets) != batch_size:
        raise ValueError(f"got {len(targets)} targets for a batch of {batch_size} images: "
                         "pass one target dict per image")
    for b, t in enumerate(targets):
        for key in ("boxes", "labels"):
            if key not in t:
                raise KeyError(f"targets[{b}] has no {key!r}: each target needs 'boxes' [N, 4] "
                               "(normalized cx, cy, w, h) and 'labels' [N] (int64)")
        boxes, labels = t["boxes"], t["labels"]
        if boxes.ndim != 2 or boxes.shape[-1] != 4 or labels.shape != boxes.shape[:1]:
            raise ValueError(f"targets[{b}]: 'boxes' must be [N, 4] and 'labels' [N], "
                             f"got {tuple(boxes.shape)} and {tuple(labels.shape)}")
        if labels.dtype != torch.int64:
            raise TypeError(f"targets[{b}]['labels'] is {labels.dtype}: labels must be int64 class indices")
    labels = torch.cat([t["labels"] for t in targets])
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"a target label lies outside [0, {num_classes - 1}]: the model predicts "
                         f"{num_classes} classes plus no-object (index {num_classes}); "
                         "check num_classes against the dataset's class list")
