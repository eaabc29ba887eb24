"""Batches of differently sized images, and a sampler that repeats images of rare classes."""
from __future__ import annotations

import torch


def collate(batch):
    """``[(image [3, h, w], target), ...]`` -> ``(images [B, 3, H, W], mask [B, H, W], targets)``.

    Images are padded with zeros at the bottom and right to the largest height and width in the
    batch; ``mask`` is True on padding, which the backbone's position encoding and the transformer's
    attention must ignore. Boxes stay normalized by each image's own (unpadded) size, as in DETR.
    """
    images, targets = zip(*batch)
    height = max(im.shape[1] for im in images)
    width = max(im.shape[2] for im in images)
    out = images[0].new_zeros(len(images), 3, height, width)
    mask = torch.ones(len(images), height, width, dtype=torch.bool)
    for i, im in enumerate(images):
        out[i, :, : im.shape[1], : im.shape[2]] = im
        mask[i, : im.shape[1], : im.shape[2]] = False
    return out, mask, pack_targets(targets)


def pack_targets(targets) -> list[dict]:
    """The same targets, their tensors now views into one tensor per field.

    A DataLoader worker hands every tensor storage to the main process through its own shared
    memory segment; for small images that costs more than loading them. One storage per field
    and batch instead of one per field and image doubles the toy VOC's throughput.
    """
    targets = [dict(t) for t in targets]
    for key, value in targets[0].items():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            values = [t[key] for t in targets]
            for t, part in zip(targets, torch.cat(values).split([len(v) for v in values])):
                t[key] = part
    return targets


def repeat_factors(image_labels, threshold: float) -> torch.Tensor:
    """LVIS's repeat factors (Gupta et al., 2019): class ``c`` seen in a fraction ``f_c`` of the
    images gets ``r_c = max(1, sqrt(threshold / f_c))``; an image repeats as often as its rarest
    class asks, ``r_i = max_c r_c`` (1 for images without objects)."""
    image_labels = [torch.as_tensor(labels).unique() for labels in image_labels]
    if not image_labels:
        raise ValueError("repeat factors need at least one image")
    seen = torch.cat(image_labels).bincount().double() / len(image_labels)
    per_class = torch.clamp(torch.sqrt(threshold / seen.clamp(min=1e-12)), min=1.0)
    return torch.tensor([per_class[labels].max().item() if len(labels) else 1.0 for labels in image_labels])


class RepeatFactorSampler(torch.utils.data.Sampler):
    """Each epoch, image ``i`` appears ``floor(r_i)`` times plus once more with probability
    ``frac(r_i)`` (stochastic rounding), in a shuffled order; reproducible from ``seed``.

    ``len()`` is the size of the coming epoch, so a DataLoader's length is exact.
    """

    def __init__(self, factors: torch.Tensor, seed: int = 0):
        self.factors = torch.as_tensor(factors, dtype=torch.float64)
        self.seed = seed
        self.epoch = 0
        self._indices = None

    def _epoch_indices(self) -> torch.Tensor:
        if self._indices is None:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            whole = self.factors.floor()
            counts = whole + (torch.rand(len(self.factors), generator=g, dtype=torch.float64) < self.factors - whole)
            indices = torch.repeat_interleave(torch.arange(len(self.factors)), counts.long())
            self._indices = indices[torch.randperm(len(indices), generator=g)]
        return self._indices

    def __len__(self) -> int:
        return len(self._epoch_indices())

    def __iter__(self):
        indices = self._epoch_indices()
        self.epoch += 1
        self._indices = None
        return iter(indices.tolist())

    def expected_length(self) -> float:
        return float(self.factors.sum())


def class_repeat_rate(image_labels, factors: torch.Tensor, num_classes: int) -> torch.Tensor:
    """How many more objects of each class an epoch shows with these repeat factors than without."""
    before = torch.zeros(num_classes, dtype=torch.float64)
    after = torch.zeros(num_classes, dtype=torch.float64)
    for labels, r in zip(image_labels, factors):
        counts = torch.as_tensor(labels, dtype=torch.long).bincount(minlength=num_classes).double()
        before += counts
        after += counts * r
    return after / before.clamp(min=1)
