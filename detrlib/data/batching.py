"""Batches of differently sized images, the order of an epoch, and repeats of images of rare classes."""
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

    A DataLoader worker hands every tensor storage to the main process through its own shared memory segment, which
    for small images costs more than loading them: one storage per field and batch, not per field and image, doubles
    the toy VOC's throughput.
    """
    targets = [dict(t) for t in targets]
    for key, value in targets[0].items():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            values = [t[key] for t in targets]
            for t, part in zip(targets, torch.cat(values).split([len(v) for v in values])):
                t[key] = part
    return targets


def image_share(image_labels, num_classes: int | None = None) -> torch.Tensor:
    """The share of the images that hold each class (``num_classes`` of them, else as many as the
    largest label asks), from each image's labels."""
    image_labels = [torch.as_tensor(labels, dtype=torch.long).unique() for labels in image_labels]
    if not image_labels:
        raise ValueError("the share of images per class needs at least one image")
    return torch.cat(image_labels).bincount(minlength=num_classes or 0).double() / len(image_labels)


def repeat_factors(image_labels, threshold: float) -> torch.Tensor:
    """LVIS's repeat factors (Gupta et al., 2019): class ``c`` seen in a fraction ``f_c`` of the
    images (:func:`image_share`) gets ``r_c = max(1, sqrt(threshold / f_c))``; an image repeats as
    often as its rarest class asks, ``r_i = max_c r_c`` (1 for images without objects)."""
    seen = image_share(image_labels)
    per_class = torch.clamp(torch.sqrt(threshold / seen.clamp(min=1e-12)), min=1.0)
    return torch.tensor([per_class[torch.as_tensor(labels, dtype=torch.long)].max().item() if len(labels) else 1.0
                         for labels in image_labels])


def epoch_order(n: int, seed: int, epoch: int, factors=None) -> torch.Tensor:
    """The shuffled image indices of one epoch, a pure function of its arguments. With LVIS repeat ``factors`` (one
    per image), image ``i`` appears ``floor(r_i)`` times plus once more with probability ``frac(r_i)``."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    indices = torch.arange(n)
    if factors is not None:
        factors = torch.as_tensor(factors, dtype=torch.float64)
        whole = factors.floor()
        counts = whole + (torch.rand(n, generator=g, dtype=torch.float64) < factors - whole)
        indices = torch.repeat_interleave(indices, counts.long())
    return indices[torch.randperm(len(indices), generator=g)]


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1,
                  factors=None) -> list[list[tuple[int, int]]]:
    """This process's batches of ``(index, item seed)`` for one epoch of :func:`epoch_order`: each global batch of
    ``batch_size * world`` items is shared out between the ``world`` processes, an incomplete last batch dropped.
    Being a pure function, it lets a resumed run skip exactly the batches it had already trained on. Serve them with
    :class:`SeededItems`."""
    order = epoch_order(n, seed, epoch, factors).tolist()
    g = torch.Generator().manual_seed(seed * 100_003 + epoch + 1)
    item_seeds = torch.randint(0, 2**62, (len(order),), generator=g).tolist()
    per_step = batch_size * world
    return [[(order[j], item_seeds[j]) for j in range(start + rank, start + per_step, world)]
            for start in range(0, len(order) - per_step + 1, per_step)]


class SeededItems(torch.utils.data.Dataset):
    """Serves ``(index, seed)`` requests, seeding torch's RNG for each item: random augmentations then depend only
    on the run's seed, the epoch and the position in it, not on the number of workers or where a run resumed."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            # the CPU generator alone: torch.manual_seed would also queue a seed for every GPU
            # backend, recording a traceback each time (a fifth of the toy VOC's loading time)
            torch.default_generator.manual_seed(seed)
            return self.dataset[index]


def training_labels(dataset) -> list:
    """Each image's training labels (difficult objects left out unless the dataset keeps them)."""
    return [r.labels if dataset.keep_difficult else r.labels[~r.difficult] for r in dataset.records]


def class_repeat_rate(image_labels, factors: torch.Tensor, num_classes: int) -> torch.Tensor:
    """How many more objects of each class an epoch shows with these repeat factors than without."""
    before = torch.zeros(num_classes, dtype=torch.float64)
    after = torch.zeros(num_classes, dtype=torch.float64)
    for labels, r in zip(image_labels, factors):
        counts = torch.as_tensor(labels, dtype=torch.long).bincount(minlength=num_classes).double()
        before += counts
        after += counts * r
    return after / before.clamp(min=1)
