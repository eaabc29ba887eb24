"""Detection metrics through pycocotools, never a hand-written AP.

AP@0.5 is the book's headline number (PASCAL VOC's metric); COCO's AP (mean over IoU 0.50:0.95), AP@0.75 and AP for
small / medium / large objects come from the same evaluation; per-class AP@0.5 is grouped into head and tail classes
(class imbalance). VOC's ``difficult`` objects are ignore regions (COCO's ``iscrowd``): neither rewarded nor punished.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detrlib.data.stats import class_groups


def coco_ground_truth(annotations: list[dict], classes: list[str]) -> COCO:
    """A pycocotools ``COCO`` from per-image annotations ``{"image_id", "width", "height", "boxes": [[x1, y1, x2, y2],
    ...] in pixels, "labels": [...], "difficult": [...]}``; labels index ``classes``."""
    images, objects = [], []
    for ann in annotations:
        images.append({"id": int(ann["image_id"]), "width": int(ann["width"]), "height": int(ann["height"])})
        difficult = ann.get("difficult", [False] * len(ann["labels"]))
        for box, label, hard in zip(ann["boxes"], ann["labels"], difficult):
            x1, y1, x2, y2 = (float(v) for v in box)
            objects.append({"id": len(objects) + 1, "image_id": int(ann["image_id"]), "category_id": int(label),
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                            "iscrowd": int(bool(hard))})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": objects,
                    "categories": [{"id": i, "name": name} for i, name in enumerate(classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def ground_truth(dataset) -> list[dict]:
    """:func:`coco_ground_truth`'s annotations from a :class:`~detrlib.data.VOCDataset`'s records: original pixel
    boxes, every object, difficult ones flagged."""
    return [{"image_id": r.image_id, "width": r.width, "height": r.height, "boxes": r.boxes.tolist(),
             "labels": r.labels.tolist(), "difficult": r.difficult.tolist()} for r in dataset.records]


def coco_results(predictions: dict[int, dict]) -> list[dict]:
    """COCO results JSON entries from ``{image_id: {"scores", "labels", "boxes" x1,y1,x2,y2 pixels}}``."""
    results = []
    for image_id, pred in predictions.items():
        for score, label, box in zip(pred["scores"].tolist(), pred["labels"].tolist(), pred["boxes"].tolist()):
            x1, y1, x2, y2 = box
            results.append({"image_id": int(image_id), "category_id": int(label),
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    return results


def save_results(predictions: dict[int, dict], path: str | Path) -> Path:
    """Write predictions as a COCO results JSON file (what COCO's tools and leaderboards read)."""
    path = Path(path)
    path.write_text(json.dumps(coco_results(predictions)))
    return path


def evaluate_detections(annotations: list[dict], predictions: dict[int, dict], classes: list[str],
                        train_counts: list[int] | None = None, voc07: bool = False) -> dict:
    """COCO-style metrics of ``predictions`` against ``annotations`` (see :func:`coco_ground_truth`).

    Returns AP50 (the headline), AP, AP75, APs, APm, APl, AR100, ``per_class_AP50`` and, given the training class
    counts, ``head_AP50`` / ``tail_AP50``; ``voc07=True`` adds ``AP50_voc07``, older VOC papers' 11-point AP.
    """
    gt = coco_ground_truth(annotations, classes)
    results = coco_results(predictions)
    metrics = _run_cocoeval(gt, results)
    if voc07:
        metrics["AP50_voc07"] = _run_cocoeval(gt, results, rec_thresholds=np.linspace(0, 1, 11))["AP50"]
    if train_counts is not None:
        per_class = metrics["per_class_AP50"]
        for group, members in class_groups(train_counts).items():
            values = [per_class[classes[c]] for c in members if not np.isnan(per_class[classes[c]])]
            metrics[f"{group}_AP50"] = float(np.mean(values)) if values else float("nan")
    return metrics


_STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def _run_cocoeval(gt: COCO, results: list[dict], rec_thresholds=None) -> dict:
    classes = [gt.cats[i]["name"] for i in sorted(gt.cats)]
    if not results or not gt.getAnnIds():
        nan = float("nan") if not gt.getAnnIds() else 0.0
        return {**{k: nan for k in _STAT_NAMES}, "per_class_AP50": {c: nan for c in classes}}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iouType="bbox")
        if rec_thresholds is not None:
            ev.params.recThrs = rec_thresholds
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    metrics = {name: float(v) for name, v in zip(_STAT_NAMES, ev.stats)}
    # precision[T, R, K, A, M]: IoU 0.5, every recall threshold, class k, all areas, 100 detections
    precision = ev.eval["precision"][0, :, :, 0, -1]
    per_class = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, k]
        per_class[gt.cats[cat_id]["name"]] = float(p[p > -1].mean()) if (p > -1).any() else float("nan")
    metrics["per_class_AP50"] = per_class
    return {k: (v if not isinstance(v, float) or v >= 0 else float("nan")) for k, v in metrics.items()}
