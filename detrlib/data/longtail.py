"""The "modified VOC": a long-tailed subset of any VOC-format tree, written as new split files.

An imbalance profile names a target shape for the objects per class, classes ranked by how often they occur in
the full set: with ``exp<R>`` (e.g. ``exp50``) counts fall exponentially from the most frequent class to the least,
which gets ``1/R`` of the head's count; with ``step<R>`` (e.g. ``step10``) the more frequent half keeps its count,
the rarer half gets ``1/R`` of the head's. No class gets more than it has.

Images hold several classes, so the subset is found greedily (:func:`select_longtail`) and its counts follow the
profile only roughly; ``seed`` breaks ties, so a seed gives one subset. Images without objects are all kept. The new
split is ``<split>-<profile>-s<seed>``.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from detrlib.data.voc import DataError, VOCDataset, read_split, split_file, write_split


def parse_profile(profile: str) -> tuple[str, float]:
    match = re.fullmatch(r"(exp|step)(\d+(?:\.\d+)?)", profile)
    if not match or float(match.group(2)) < 1:
        raise DataError(f"unknown imbalance profile {profile!r}: use exp<R> or step<R> with a head-to-tail "
                         "ratio R >= 1, e.g. exp50 or step10")
    return match.group(1), float(match.group(2))


def target_counts(counts: np.ndarray, profile: str) -> np.ndarray:
    """Objects each class should keep: the profile's shape from the head's count, capped by what the class has."""
    kind, ratio = parse_profile(profile)
    order = np.argsort(-counts, kind="stable")
    rank = np.empty(len(counts), dtype=int)
    rank[order] = np.arange(len(counts))
    if kind == "exp":
        factor = ratio ** (-rank / max(len(counts) - 1, 1))
    else:
        factor = np.where(rank < (len(counts) + 1) // 2, 1.0, 1.0 / ratio)
    return np.minimum(counts, np.round(counts.max() * factor)).astype(int)


def per_image_counts(dataset: VOCDataset) -> np.ndarray:
    """``[images, classes]`` non-difficult objects per image and class."""
    table = np.zeros((len(dataset.records), len(dataset.classes)), dtype=int)
    for i, r in enumerate(dataset.records):
        np.add.at(table[i], r.labels[~r.difficult], 1)
    return table


def select_longtail(table: np.ndarray, profile: str, seed: int = 0) -> np.ndarray:
    """Indices (sorted) of the images to keep from a ``[images, classes]`` count table: starting from every image,
    for each class, rarest target first, remove images holding it until it is down to its target, taking first the
    images whose other objects are least wanted (their classes already at or over target), ties broken in the seed's
    random order."""
    targets = target_counts(table.sum(0), profile)
    tiebreak = np.random.default_rng(seed).random(len(table))
    kept = np.ones(len(table), dtype=bool)
    have = table.sum(0)
    for c in np.argsort(targets, kind="stable"):
        if have[c] <= targets[c]:
            continue
        candidates = np.flatnonzero(kept & (table[:, c] > 0))
        wanted = have < targets  # classes that would miss the objects an image takes with it
        damage = (table[candidates] * wanted).sum(1)
        for i in candidates[np.lexsort((tiebreak[candidates], damage))]:
            if have[c] <= targets[c]:
                break
            kept[i] = False
            have -= table[i]
    return np.flatnonzero(kept)


def longtail_split_name(split: str, profile: str, seed: int) -> str:
    return f"{split}-{profile}-s{seed}"


def write_longtail(dataset: VOCDataset, profile: str, seed: int = 0) -> tuple[list[tuple[Path, str]], np.ndarray, np.ndarray]:
    """Write the long-tailed split files next to the dataset's own, one per set. Returns the new
    ``(year_dir, split)`` sets, and the objects per class before and after."""
    table = per_image_counts(dataset)
    keep = select_longtail(table, profile, seed)
    chosen = {(dataset.records[i].xml_path.parent.parent, dataset.records[i].name) for i in keep}
    new_sets = []
    for year_dir, split in dataset.sets:
        new_split = longtail_split_name(split, profile, seed)
        write_split(year_dir, new_split, [n for n in read_split(year_dir, split) if (year_dir, n) in chosen])
        new_sets.append((year_dir, new_split))
    return new_sets, table.sum(0), table[keep].sum(0)


def longtail_sets(sets, profile: str, seed: int = 0) -> list[tuple[Path, str]]:
    """The long-tailed version of ``sets``, writing its split files on first use."""
    derived = [(Path(y), longtail_split_name(s, profile, seed)) for y, s in sets]
    if all(split_file(y, s).exists() for y, s in derived):
        return derived
    new_sets, _, after = write_longtail(VOCDataset(sets), profile, seed)
    if after.sum() == 0:
        raise DataError(f"the {profile} subset of {sets} holds no objects")
    return new_sets
