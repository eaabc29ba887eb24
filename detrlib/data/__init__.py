"""Data: VOC-format reading, the generated toy VOC, the long-tailed subset, transforms, batching.

``build_dataset(cfg.data, "train")`` and ``build_loader(dataset, batch_size, train=True)`` are all
a training script needs; the modules below are the pieces they put together.
"""
from __future__ import annotations

from pathlib import Path

import torch

from detrlib.config import Config, DataConfig, workdir
from detrlib.data.batching import SeededItems, collate, epoch_batches, repeat_factors, training_labels
from detrlib.data.download import archives_for, download_voc
from detrlib.data.longtail import longtail_sets
from detrlib.data.toy import TOY_CLASSES, ToySpec, ensure_toy_voc
from detrlib.data.transforms import build_train_transforms, build_val_transforms, denormalize
from detrlib.data.voc import VOC_CLASSES, DataError, VOCDataset, parse_sets, read_classes, split_file, subset_sets

__all__ = [
    "VOC_CLASSES", "TOY_CLASSES", "DataError", "VOCDataset", "build_dataset", "build_loader", "collate",
    "data_root", "denormalize", "toy_spec",
]


def toy_spec(cfg: DataConfig) -> ToySpec:
    return ToySpec(image_size=cfg.toy_image_size, max_objects=cfg.toy_max_objects, clutter=cfg.toy_clutter)


def data_root(cfg: DataConfig) -> Path:
    """The folder holding ``VOCdevkit``: the toy VOC (generated once per setting) when ``cfg.root``
    is empty, else ``cfg.root`` (relative paths live under ``workdir()``), downloaded into when
    ``cfg.download`` is set and the sets are missing."""
    if not cfg.root:
        if cfg.toy_train + cfg.toy_val == 0:
            raise DataError("data.root is empty and data.toy_train/toy_val are 0: set data.root to a folder "
                            "holding VOCdevkit, or give the toy VOC some images")
        return ensure_toy_voc(workdir() / "toy", cfg.toy_train, cfg.toy_val, cfg.toy_seed, toy_spec(cfg))
    root = Path(cfg.root).expanduser()
    root = root if root.is_absolute() else workdir() / root
    if cfg.download:
        wanted = [s for s in (*cfg.train_sets, *cfg.val_sets)
                  if not split_file(root / "VOCdevkit" / s.split(":")[0], s.split(":")[1]).exists()]
        if wanted:
            download_voc(root, archives_for(wanted))
    return root


def trained_classes(cfg: Config, state: dict) -> tuple[str, ...]:
    """The class names a checkpoint was trained on: stored in it (``state["classes"]``); for older
    checkpoints, those of the training data its config names when they fit its class head, else
    VOC's when it has 20 classes, else ``class 0``, ``class 1``, ..."""
    if state.get("classes"):
        return tuple(state["classes"])
    names = TOY_CLASSES
    if cfg.data.root:
        root = Path(cfg.data.root).expanduser()
        try:
            names = read_classes(parse_sets(root if root.is_absolute() else workdir() / root, cfg.data.train_sets)[0][0])
        except DataError:  # that data is not on this machine
            names = ()
    if len(names) == cfg.model.num_classes:
        return names
    if cfg.model.num_classes == len(VOC_CLASSES):
        return VOC_CLASSES
    return tuple(f"class {i}" for i in range(cfg.model.num_classes))


def build_dataset(cfg: DataConfig, split: str) -> VOCDataset:
    """The ``"train"`` sets (long-tailed when ``cfg.longtail`` names a profile) with the training transforms, or the
    ``"val"`` sets (a fixed subset of ``cfg.val_subset`` images when set) with the validation transforms."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    root = data_root(cfg)
    train = split == "train"
    sets = parse_sets(root, cfg.train_sets if train else cfg.val_sets)
    if train and cfg.longtail:
        sets = longtail_sets(sets, cfg.longtail, cfg.longtail_seed)
    if not train and cfg.val_subset:
        sets = subset_sets(sets, cfg.val_subset)
    transforms = build_train_transforms(cfg) if train else build_val_transforms(cfg)
    return VOCDataset(sets, transforms, keep_difficult=cfg.keep_difficult, max_size=cfg.max_size)


def build_loader(dataset: VOCDataset, batch_size: int, train: bool, num_workers: int = 0,
                 repeat_factor_t: float = 0.0, seed: int = 0, epoch: int = 0, start: int = 0, rank: int = 0,
                 world: int = 1) -> torch.utils.data.DataLoader:
    """Batches of :func:`collate`: what :func:`detrlib.engine.train` trains on, and every other user.

    Training serves epoch ``epoch`` of :func:`~detrlib.data.batching.epoch_batches`: shuffled from ``seed``, drawn
    with LVIS repeat factors when ``repeat_factor_t > 0``, the last incomplete batch dropped, this process's share of
    each global batch under DDP (``rank`` of ``world``), from batch ``start`` on (a resumed run). Each image's random
    augmentation is seeded by its place in the epoch (:class:`~detrlib.data.batching.SeededItems`), so batches do not
    depend on the workers. Validation keeps the dataset's order."""
    if not train:
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=num_workers,
                                           persistent_workers=num_workers > 0)
    factors = repeat_factors(training_labels(dataset), repeat_factor_t) if repeat_factor_t > 0 else None
    batches = epoch_batches(len(dataset), batch_size, seed, epoch, rank, world, factors)
    return torch.utils.data.DataLoader(  # its own generator: starting it must not draw from the global RNG
        SeededItems(dataset), batch_sampler=batches[start:], collate_fn=collate, num_workers=num_workers,
        persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(seed + epoch))
