"""evaluate.py against AP values worked out by hand."""
import math

import pytest
import torch

from detrlib.data.stats import class_groups
from detrlib.evaluate import coco_results, evaluate_detections

CLASSES = ["cat", "dog"]


def image(image_id, boxes, labels, difficult=None):
    return {"image_id": image_id, "width": 100, "height": 100, "boxes": boxes, "labels": labels,
            "difficult": difficult or [False] * len(labels)}


def preds(boxes, labels, scores):
    return {"boxes": torch.tensor(boxes, dtype=torch.float), "labels": torch.tensor(labels),
            "scores": torch.tensor(scores)}


def test_ap_of_a_ranked_list_matches_the_hand_computation():
    # Two cats; detections ranked: hit (0.9), miss (0.8), hit (0.7).
    # precision/recall: (1, .5), (.5, .5), (.667, 1); interpolated precision is 1 up to recall .5
    # and 2/3 above. COCO samples 101 recall points: 51 at 1, 50 at 2/3. VOC07 samples 11: 6 and 5.
    gt = [image(1, [[10, 10, 30, 30], [50, 50, 90, 90]], [0, 0])]
    dt = {1: preds([[10, 10, 30, 30], [0, 60, 20, 80], [50, 50, 90, 90]], [0, 0, 0], [0.9, 0.8, 0.7])}
    m = evaluate_detections(gt, dt, CLASSES, voc07=True)
    assert m["AP50"] == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-6)
    assert m["AP50_voc07"] == pytest.approx((6 + 5 * 2 / 3) / 11, abs=1e-6)
    assert m["AP"] == pytest.approx(m["AP50"], abs=1e-6)  # exact boxes: same at every IoU threshold
    assert m["per_class_AP50"]["cat"] == pytest.approx(m["AP50"], abs=1e-6)
    assert math.isnan(m["per_class_AP50"]["dog"])  # no dog in the ground truth


def test_iou_threshold_and_wrong_class():
    # The first box overlaps its cat with IoU 0.6: a hit at 0.5, a miss at 0.75. The dog
    # prediction on the second cat is a false positive for "dog" and a miss for that cat.
    gt = [image(1, [[0, 0, 50, 50], [60, 60, 90, 90]], [0, 0])]
    dt = {1: preds([[0, 0, 50, 30], [60, 60, 90, 90]], [0, 1], [0.9, 0.8])}  # IoU = 1500/2500 = 0.6
    m = evaluate_detections(gt, dt, CLASSES)
    # cat: recall 0.5 at precision 1, then nothing: 51 of 101 points at 1
    assert m["per_class_AP50"]["cat"] == pytest.approx(51 / 101, abs=1e-6)
    assert m["AP50"] == pytest.approx(51 / 101, abs=1e-6)
    assert m["AP75"] == pytest.approx(0.0, abs=1e-6)


def test_difficult_objects_are_ignored_not_missed():
    gt = [image(1, [[10, 10, 30, 30], [50, 50, 90, 90]], [0, 0], difficult=[False, True])]
    only_easy = evaluate_detections(gt, {1: preds([[10, 10, 30, 30]], [0], [0.9])}, CLASSES)
    both = evaluate_detections(gt, {1: preds([[10, 10, 30, 30], [50, 50, 90, 90]], [0, 0], [0.9, 0.8])}, CLASSES)
    assert only_easy["AP50"] == pytest.approx(1.0) and both["AP50"] == pytest.approx(1.0)


def test_head_and_tail_groups_and_results_json():
    assert class_groups([100, 5, 50, 1, 20, 7]) == {"head": [0, 2], "tail": [1, 3]}
    gt = [image(1, [[10, 10, 30, 30]], [0]), image(2, [[10, 10, 30, 30]], [1])]
    dt = {1: preds([[10, 10, 30, 30]], [0], [0.9]), 2: preds([[60, 60, 80, 80]], [1], [0.9])}
    m = evaluate_detections(gt, dt, CLASSES, train_counts=[10, 1])
    assert m["head_AP50"] == pytest.approx(1.0) and m["tail_AP50"] == pytest.approx(0.0)
    assert coco_results(dt)[1] == {"image_id": 2, "category_id": 1, "bbox": [60.0, 60.0, 20.0, 20.0],
                                   "score": pytest.approx(0.9)}


def test_no_predictions_scores_zero():
    gt = [image(1, [[10, 10, 30, 30]], [0])]
    m = evaluate_detections(gt, {1: preds(torch.zeros(0, 4).tolist(), [], [])}, CLASSES)
    assert m["AP50"] == 0.0
