"""Hungarian matching: which prediction answers for which ground-truth object.

DETR predicts a set of Q boxes; an image has T objects (usually T <= Q). Training needs the one-to-one pairing of
least total cost (Carion et al. 2020, eq. 1), the cost of pairing prediction i with object j being

    cost_class * (-p_i[class_j]) + cost_bbox * |b_i - b_j|_1 + cost_giou * (-GIoU(b_i, b_j)).

A model with one sigmoid per class (Deformable and Conditional DETR, ``sigmoid=True``) is matched with the focal cost
instead of ``-p``: with ``p = sigmoid(logit)`` of the object's class, ``α (1 - p)^γ (-log p) - (1 - α) p^γ
(-log(1 - p))``, what the focal loss gains by calling the prediction that class rather than background.

The official code builds one cost matrix between every prediction and every object of the batch, [B*Q, sum T], and
throws away all but the B diagonal blocks: work grows as B². Here every image's objects are padded to the batch's
largest count T_max, so that a handful of tensor operations (no Python loop) give terms [B, Q, T_max] (never more than
the official [B*Q, sum T]), of which image b keeps its first T_b columns: work grows linearly in B, same assignment.

These small tensors (a few hundred thousand entries at DETR's sizes) and few dozen operations run on one CPU thread:
split over several, every operation ends at a barrier where the threads wait for each other, and on a busy machine
(a laptop, Colab's two vCPUs next to DataLoader workers, CI) a thread that lost its core makes the barrier wait a
scheduler time slice, far longer than the operation: matching becomes slower than the all-pairs matrix it replaces."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence
from torchvision.ops import box_convert, generalized_box_iou

from detrlib.targets import check_targets

# torchvision's GIoU pairs [N, 4] with [M, 4]; vmap runs it over a leading batch dimension
_batched_giou = torch.vmap(generalized_box_iou)


@contextmanager
def one_thread():
    """Torch's CPU operations on one thread inside the block (or decorated function), then the caller's setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def focal_cost(logits: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """The focal matching cost of every class, from its logit (the module's docstring): ``[..., C]``."""
    p = logits.float().sigmoid()
    positive = alpha * (1 - p) ** gamma * -(p + 1e-8).log()
    negative = (1 - alpha) * p ** gamma * -(1 - p + 1e-8).log()
    return positive - negative


@one_thread()
def pair_costs(logits: Tensor, boxes: Tensor, labels: Tensor, tgt_boxes: Tensor,
               focal: tuple[float, float] | None = None) -> dict[str, Tensor]:
    """The three unweighted cost terms between the Q predictions and T objects of each image.

    ``logits`` [B, Q, C+1] and ``boxes`` [B, Q, 4] (cx, cy, w, h) are the outputs; ``labels`` [B, T] and ``tgt_boxes``
    [B, T, 4] the ground truth. Returns {"class", "bbox", "giou"}, each [B, Q, T], computed in fp32 whatever the input
    precision, on one CPU thread (see the module's docstring). ``focal = (alpha, gamma)``: ``logits`` [B, Q, C] are
    sigmoid logits, and the class term is :func:`focal_cost`."""
    cost = focal_cost(logits, *focal) if focal else -logits.float().softmax(-1)  # -p: a constant does not matter
    boxes, tgt_boxes = boxes.float(), tgt_boxes.float()
    return {
        "class": cost.gather(-1, labels[:, None, :].expand(-1, cost.shape[1], -1)),
        "bbox": torch.cdist(boxes, tgt_boxes, p=1),
        "giou": -_batched_giou(box_convert(boxes, "cxcywh", "xyxy"), box_convert(tgt_boxes, "cxcywh", "xyxy")),
    }


def pad_targets(targets: list[dict]) -> tuple[Tensor, Tensor, list[int]]:
    """Labels [B, T_max] and boxes [B, T_max, 4], padded with a valid dummy box, and each image's T_b."""
    labels = pad_sequence([t["labels"] for t in targets], batch_first=True)
    boxes = pad_sequence([t["boxes"] for t in targets], batch_first=True, padding_value=0.5)
    return labels, boxes, [len(t["labels"]) for t in targets]


class HungarianMatcher(nn.Module):
    """The one-to-one assignment of least total cost between predictions and ground truth.

    ``matcher(outputs, targets)`` returns, per image, ``(pred_idx, tgt_idx)``: two int64 CPU tensors of equal length
    min(Q, T), sorted by prediction index; prediction ``pred_idx[k]`` is matched to object ``tgt_idx[k]``, and
    unmatched predictions are to say "no object" (with more objects than queries, Q of them are matched, the rest left
    out). ``sigmoid=True`` matches a sigmoid class head's outputs (C logits) by the focal cost."""

    def __init__(self, cost_class: float = 1, cost_bbox: float = 5, cost_giou: float = 2, sigmoid: bool = False,
                 focal_alpha: float = 0.25, focal_gamma: float = 2.0):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("all matching costs are 0: set at least one of cost_class, cost_bbox, cost_giou")
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.focal = (focal_alpha, focal_gamma) if sigmoid else None

    @one_thread()
    def weigh(self, terms: dict[str, Tensor]) -> Tensor:
        """The weighted sum of the cost terms: the cost the assignment minimises."""
        return self.cost_class * terms["class"] + self.cost_bbox * terms["bbox"] + self.cost_giou * terms["giou"]

    @torch.no_grad()
    def padded_cost_terms(self, outputs: dict, targets: list[dict]) -> tuple[dict[str, Tensor], list[int]]:
        """:func:`pair_costs` for the whole batch, [B, Q, T_max], and each image's object count T_b."""
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        check_targets(targets, logits.shape[0], logits.shape[-1] - (self.focal is None))  # no no-object logit
        labels, tgt_boxes, sizes = pad_targets(targets)
        return pair_costs(logits, boxes, labels.to(logits.device), tgt_boxes.to(boxes.device), self.focal), sizes

    def cost_terms(self, outputs: dict, targets: list[dict]) -> list[dict[str, Tensor]]:
        """Per image, the unweighted terms {"class", "bbox", "giou"}, each [Q, T_b]."""
        terms, sizes = self.padded_cost_terms(outputs, targets)
        return [{k: v[b, :, :n] for k, v in terms.items()} for b, n in enumerate(sizes)]

    def cost_matrices(self, outputs: dict, targets: list[dict]) -> list[Tensor]:
        """Per image, the weighted cost matrix [Q, T_b]."""
        terms, sizes = self.padded_cost_terms(outputs, targets)
        cost = self.weigh(terms)
        return [cost[b, :, :n] for b, n in enumerate(sizes)]

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict]) -> list[tuple[Tensor, Tensor]]:
        terms, sizes = self.padded_cost_terms(outputs, targets)
        cost = self.weigh(terms).cpu().numpy()  # one device-to-host copy for the whole batch
        if not np.isfinite(cost).all():
            raise ValueError("the matching cost has NaN or inf entries: check that pred_boxes and target "
                             "boxes are finite, normalized cx, cy, w, h with w, h > 0")
        indices = []
        for b, n in enumerate(sizes):
            rows, cols = linear_sum_assignment(cost[b, :, :n])  # rows come out sorted
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices

    def extra_repr(self) -> str:
        focal = f", focal alpha={self.focal[0]}, gamma={self.focal[1]}" if self.focal else ""
        return f"cost_class={self.cost_class}, cost_bbox={self.cost_bbox}, cost_giou={self.cost_giou}{focal}"
