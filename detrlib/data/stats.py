"""What a VOC-format dataset holds: images, objects per class, box sizes, head and tail."""
from __future__ import annotations

from collections import Counter

import numpy as np

# COCO's size buckets, by box area in pixels of the original image
SIZE_BUCKETS = (("small", 32 ** 2), ("medium", 96 ** 2), ("large", float("inf")))


def size_bucket(area: float) -> str:
    return next(name for name, limit in SIZE_BUCKETS if area < limit)


def class_groups(counts) -> dict[str, list[int]]:
    """Head = the most frequent third of the classes by ``counts`` (e.g. training objects per class),
    tail = the least frequent third; ties go to the earlier class. Sorted class indices."""
    order = sorted(range(len(counts)), key=lambda c: (-counts[c], c))
    third = max(1, len(counts) // 3)
    return {"head": sorted(order[:third]), "tail": sorted(order[-third:])}


def dataset_stats(dataset) -> dict:
    """Counts for a :class:`~detrlib.data.voc.VOCDataset` (read from its records, so transforms
    do not matter). Difficult objects are counted apart and left out of the box sizes."""
    objects = Counter({name: 0 for name in dataset.classes})
    difficult = Counter({name: 0 for name in dataset.classes})
    sizes = Counter({name: 0 for name, _ in SIZE_BUCKETS})
    truncated = 0
    for r in dataset.records:
        areas = (r.boxes[:, 2] - r.boxes[:, 0]) * (r.boxes[:, 3] - r.boxes[:, 1])
        for label, hard, cut, area in zip(r.labels, r.difficult, r.truncated, areas):
            name = dataset.classes[label]
            if hard:
                difficult[name] += 1
                continue
            objects[name] += 1
            sizes[size_bucket(float(area))] += 1
            truncated += bool(cut)
    groups = class_groups(list(objects.values()))
    most, least = max(objects.values()), min(objects.values())
    total = sum(objects.values())
    return {
        "sets": dataset.describe_sets(),
        "images": len(dataset.records),
        "images_without_objects": dataset.report.negatives,
        "objects": total,
        "difficult": sum(difficult.values()),
        "truncated": truncated,
        "per_class": {name: {"objects": objects[name], "difficult": difficult[name]} for name in dataset.classes},
        "box_sizes": dict(sizes),
        "small_fraction": sizes["small"] / total if total else 0.0,
        **{group: [dataset.classes[c] for c in members] for group, members in groups.items()},
        "head_to_tail": most / least if least else float("inf"),
        "clipped": dataset.report.clipped,
        "dropped": dataset.report.dropped,
        "skipped": [{"file": path, "reason": reason} for path, reason in dataset.report.skipped],
    }


def box_areas(dataset) -> np.ndarray:
    """Areas in pixels of the original images of every non-difficult box."""
    areas = [(r.boxes[:, 2] - r.boxes[:, 0]) * (r.boxes[:, 3] - r.boxes[:, 1]) for r in dataset.records]
    keep = [~r.difficult for r in dataset.records]
    return np.concatenate([a[k] for a, k in zip(areas, keep)]) if areas else np.zeros(0)


def format_stats(stats: dict) -> str:
    lines = [
        f"sets      {stats['sets']}",
        f"images    {stats['images']} ({stats['images_without_objects']} without objects)",
        f"objects   {stats['objects']} (+ {stats['difficult']} difficult, not counted below); "
        f"{stats['truncated']} truncated",
        f"repairs   {stats['clipped']} boxes clipped, {stats['dropped']} dropped; {len(stats['skipped'])} records skipped",
        "",
        f"{'class':<16} {'objects':>8} {'difficult':>9}",
    ]
    for name in sorted(stats["per_class"], key=lambda c: -stats["per_class"][c]["objects"]):
        tag = " head" if name in stats["head"] else " tail" if name in stats["tail"] else ""
        row = stats["per_class"][name]
        lines.append(f"{name:<16} {row['objects']:>8} {row['difficult']:>9}{tag}")
    lines += [f"head-to-tail ratio (most / least frequent class): {stats['head_to_tail']:.1f}", "",
              "box sizes (COCO buckets, area in original pixels):"]
    total = max(stats["objects"], 1)
    for (name, limit), prev in zip(SIZE_BUCKETS, (0, 32, 96)):
        rule = f"< {int(limit ** 0.5)}^2" if limit != float("inf") else f">= {prev}^2"
        lines.append(f"  {name:<7} {rule:<8} {stats['box_sizes'][name]:>7}  {100 * stats['box_sizes'][name] / total:5.1f}%")
    return "\n".join(lines)
