"""DETR's augmentation with ``torchvision.transforms.v2``; boxes (``tv_tensors.BoundingBoxes``) move with the pixels.

Training (as in the official DETR): horizontal flip; then, with equal chance, either a multi-scale resize (shorter
side drawn from ``train_scales``, longer side at most ``max_size``) or DETR's crop (resize, cut a random-size window,
resize again); then normalize with ImageNet's mean and std. Validation: one resize to ``val_size`` (capped by
``max_size``) and normalize.
"""
from __future__ import annotations

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from detrlib.config import DataConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def flags(inputs):
    """What SanitizeBoundingBoxes filters together with the boxes it drops."""
    target = inputs[1]
    return target["labels"], target["difficult"], target["truncated"]


class RandomSizeCrop(v2.Transform):
    """Cut a window whose width and height are drawn from ``[min_size, min(side, max_size)]``
    (DETR's ``RandomSizeCrop``); boxes are cut with it."""

    def __init__(self, min_size: int, max_size: int):
        super().__init__()
        self.min_size, self.max_size = min_size, max_size

    def make_params(self, flat_inputs):
        height, width = v2.query_size(flat_inputs)
        w = int(torch.randint(min(self.min_size, width), min(width, self.max_size) + 1, ()))
        h = int(torch.randint(min(self.min_size, height), min(height, self.max_size) + 1, ()))
        top = int(torch.randint(0, height - h + 1, ()))
        left = int(torch.randint(0, width - w + 1, ()))
        return {"top": top, "left": left, "height": h, "width": w}

    def transform(self, inpt, params):
        return self._call_kernel(F.crop, inpt, **params)


def crop_sizes(cfg: DataConfig) -> tuple[tuple[int, ...], int, int]:
    """DETR's crop sizes (resize to 400/500/600, crop 384..600 for scales up to 800), scaled to
    the largest training scale so that small profiles crop in proportion."""
    top = max(cfg.train_scales)
    return tuple(round(top * f) for f in (0.5, 0.625, 0.75)), round(top * 0.48), round(top * 0.75)


def build_train_transforms(cfg: DataConfig) -> v2.Compose:
    resize = v2.RandomShortestSize(min_size=list(cfg.train_scales), max_size=cfg.max_size)
    if cfg.random_crop:
        pre_scales, crop_min, crop_max = crop_sizes(cfg)
        resize = v2.RandomChoice([
            resize,
            v2.Compose([v2.RandomShortestSize(min_size=list(pre_scales)), RandomSizeCrop(crop_min, crop_max),
                        # only a crop can leave a box empty: drop those, with their labels and flags
                        v2.SanitizeBoundingBoxes(min_size=1, labels_getter=flags),
                        v2.RandomShortestSize(min_size=list(cfg.train_scales), max_size=cfg.max_size)]),
        ])
    return v2.Compose([
        v2.ToImage(),
        v2.RandomHorizontalFlip(),
        resize,
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def build_val_transforms(cfg: DataConfig) -> v2.Compose:
    return v2.Compose([
        v2.ToImage(),
        v2.RandomShortestSize(min_size=[cfg.val_size], max_size=cfg.max_size),  # one size: deterministic
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """Undo :func:`v2.Normalize` for pictures: a ``[3, H, W]`` (or batched) tensor back in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image.device).view(3, 1, 1)
    return (image * std + mean).clamp(0, 1)
