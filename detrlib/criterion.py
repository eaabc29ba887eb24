"""The set criterion: DETR's loss, computed once predictions are matched to the ground truth.

For each decoder layer's outputs: match (:class:`~detrlib.matcher.HungarianMatcher`), then

- ``loss_ce``: cross-entropy over all Q predictions; matched ones learn their object's class, the others "no object"
  (class index C), down-weighted by ``eos_coef`` because they are many. Chapter 8 adds class weights for rare classes
  (:func:`class_balanced_weights`) and the focal loss. With a sigmoid class head (Conditional DETR) it is the sigmoid
  focal loss: each of the C logits is its own yes/no question, "no object" is "no" to all of them;
- ``loss_bbox``, ``loss_giou``: L1 and 1 - GIoU between matched boxes, summed and divided by the batch's object count;
- ``class_error``, ``cardinality_error``: logged metrics with no gradient.

Earlier decoder layers (``outputs["aux_outputs"]``) get their own matching, their losses the suffix ``_{i}``
(``loss_ce_0``, ...). :class:`DenoisingCriterion` adds the losses of DN-DETR's denoising queries (chapter 5)."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou_loss, sigmoid_focal_loss

from detrlib.config import Config
from detrlib.matcher import HungarianMatcher


def matched_prediction_index(indices: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """(image index, prediction index) of every matched prediction, to index [B, Q, ...] outputs."""
    batch = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)])
    return batch, torch.cat([src for src, _ in indices])


def process_mean(value: Tensor) -> Tensor:
    """``value`` summed over processes and divided by their number under DistributedDataParallel (unchanged
    otherwise). DDP averages gradients over processes; a loss divided by this mean of a normalizer, rather than by its
    local value, weighs every item of the global batch the same."""
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
        value = value / dist.get_world_size()
    return value


def count_boxes(targets: list[dict], device: torch.device) -> float:
    """The number of objects the box losses are divided by (at least 1), averaged over processes under DDP
    (:func:`process_mean`)."""
    n = torch.tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
    return process_mean(n).clamp(min=1).item()


class SetCriterion(nn.Module):
    """DETR's loss. Arguments as in the official code.

    ``losses`` names the terms to compute: ``"labels"``, ``"boxes"``, ``"cardinality"``; the name ``x`` calls the
    method ``loss_x(outputs, targets, indices, num_boxes)``, so a subclass adds a term (or swaps the classification
    loss) by defining a method. ``weight_dict`` maps loss names to their weight in :meth:`total`; names it lacks (the
    metrics) are logged only.

    Two additions for class imbalance (chapter 8), both off by default: ``class_weights`` ([C], e.g.
    :func:`class_balanced_weights`) weigh each object class in the cross-entropy as ``eos_coef`` weighs no-object, and
    ``focal_gamma`` > 0 scales each prediction's term by ``(1 - p)^focal_gamma``, ``p`` its probability of the right
    class (the focal loss). ``sigmoid=True`` takes the outputs of a sigmoid class head (C logits, no no-object) and
    makes ``loss_ce`` the sigmoid focal loss of Deformable and Conditional DETR (Lin et al.; ``focal_alpha``,
    ``focal_gamma``), where ``eos_coef`` and ``class_weights`` do not apply."""

    def __init__(self, num_classes: int, matcher: HungarianMatcher, weight_dict: dict[str, float],
                 eos_coef: float, losses: list[str], class_weights: Tensor | None = None,
                 focal_gamma: float = 0.0, sigmoid: bool = False, focal_alpha: float = 0.25):
        super().__init__()
        if sigmoid and class_weights is not None:
            raise ValueError("class_weights weigh the softmax cross-entropy; the sigmoid focal loss takes none")
        unknown = [name for name in losses if not callable(getattr(self, f"loss_{name}", None))]
        if unknown:
            raise ValueError(f"unknown loss(es) {unknown}: choose among 'labels', 'boxes', 'cardinality'")
        self.num_classes, self.matcher, self.weight_dict = num_classes, matcher, dict(weight_dict)
        self.eos_coef, self.losses = eos_coef, list(losses)
        empty_weight = torch.ones(num_classes + 1)
        if class_weights is not None:
            if len(class_weights) != num_classes:
                raise ValueError(f"class_weights has {len(class_weights)} entries for {num_classes} classes")
            empty_weight[:-1] = torch.as_tensor(class_weights, dtype=torch.float32)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)
        if focal_gamma < 0:
            raise ValueError(f"focal_gamma must be >= 0, not {focal_gamma}")
        self.focal_gamma, self.sigmoid, self.focal_alpha = focal_gamma, sigmoid, focal_alpha

    def loss_labels(self, outputs, targets, indices, num_boxes, log=True) -> dict[str, Tensor]:
        """Weighted cross-entropy over every prediction (focal with ``focal_gamma`` > 0), divided by the sum of the
        weights of the predictions' target classes, as ``F.cross_entropy``'s weighted mean; with ``sigmoid``, the
        sigmoid focal loss divided by ``num_boxes``. ``class_error`` (%) over matched ones."""
        logits = outputs["pred_logits"].float()
        idx = matched_prediction_index(indices)
        matched_classes = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)])
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        target_classes[idx] = matched_classes
        weight, nll = self.class_terms(logits, target_classes)
        if self.sigmoid:  # per object, as the box losses
            losses = {"loss_ce": nll.sum() / num_boxes}
        else:  # a weighted mean, with the weights summed over the global batch under DDP
            losses = {"loss_ce": (weight * nll).sum() / process_mean(weight.sum())}
        if log:
            losses["class_error"] = class_error(logits[idx].detach(), matched_classes)
        return losses

    def class_terms(self, logits: Tensor, target_classes: Tensor) -> tuple[Tensor, Tensor]:
        """Per prediction, the weight of its target class and its cross-entropy (focal with ``focal_gamma`` > 0):
        ``logits [N, S, C+1]``, ``target_classes [N, S]``. With ``sigmoid``: weight 1 and the sigmoid focal loss
        summed over the C logits (``[N, S, C]``), where the class C (no object) is a "no" from each."""
        if self.sigmoid:
            yes = F.one_hot(target_classes, self.num_classes + 1)[..., :-1].to(logits.dtype)
            focal = sigmoid_focal_loss(logits, yes, self.focal_alpha, self.focal_gamma, reduction="none").sum(-1)
            return torch.ones_like(focal), focal
        weight = self.empty_weight.to(logits.device)[target_classes]
        nll = F.cross_entropy(logits.transpose(1, 2), target_classes, reduction="none")
        if self.focal_gamma:
            nll = (1 - torch.exp(-nll)) ** self.focal_gamma * nll  # exp(-nll) is p of the target class
        return weight, nll

    @torch.no_grad()
    def loss_cardinality(self, outputs, targets, indices, num_boxes) -> dict[str, Tensor]:
        """Mean |predicted objects - true objects| per image, where a prediction counts when its most likely class is
        not no-object (with ``sigmoid``: when a class is more likely than not). A metric, not a loss: no gradient."""
        logits = outputs["pred_logits"]
        if self.sigmoid:
            predicted = (logits.amax(-1) > 0).sum(1).float()
        else:
            predicted = (logits.argmax(-1) != logits.shape[-1] - 1).sum(1).float()
        true = torch.tensor([float(len(t["labels"])) for t in targets], device=logits.device)
        return {"cardinality_error": F.l1_loss(predicted, true)}

    def loss_boxes(self, outputs, targets, indices, num_boxes) -> dict[str, Tensor]:
        """L1 and 1 - GIoU between matched predicted and target boxes, per object in the batch."""
        idx = matched_prediction_index(indices)
        src = outputs["pred_boxes"][idx].float()
        tgt = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).float()
        loss_giou = generalized_box_iou_loss(box_convert(src, "cxcywh", "xyxy"),
                                             box_convert(tgt, "cxcywh", "xyxy"), reduction="sum")
        return {"loss_bbox": F.l1_loss(src, tgt, reduction="sum") / num_boxes, "loss_giou": loss_giou / num_boxes}

    def get_loss(self, loss: str, outputs: dict, targets: list[dict], indices, num_boxes: float, **kwargs):
        """One term for given ``indices``: from the matcher, or known in advance (denoising)."""
        return getattr(self, f"loss_{loss}")(outputs, targets, indices, num_boxes, **kwargs)

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, Tensor]:
        num_boxes = count_boxes(targets, outputs["pred_logits"].device)
        indices = self.matcher(outputs, targets)
        losses = {}
        for loss in self.losses:
            losses.update(self.get_loss(loss, outputs, targets, indices, num_boxes))
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            indices = self.matcher(aux, targets)  # each layer gets its own matching
            for loss in self.losses:
                kwargs = {"log": False} if loss == "labels" else {}
                terms = self.get_loss(loss, aux, targets, indices, num_boxes, **kwargs)
                losses.update({f"{k}_{i}": v for k, v in terms.items()})
        return losses

    def total(self, losses: dict[str, Tensor]) -> Tensor:
        """The weighted sum that training minimises."""
        return sum(losses[k] * w for k, w in self.weight_dict.items() if k in losses)


@torch.no_grad()
def class_error(logits: Tensor, labels: Tensor) -> Tensor:
    """100 - top-1 accuracy (%) of matched predictions; 0 when nothing is matched."""
    if labels.numel() == 0:
        return torch.zeros((), device=logits.device)
    return 100 - (logits.argmax(-1) == labels).float().mean() * 100


class DenoisingCriterion(SetCriterion):
    """:class:`SetCriterion` plus the losses of the denoising queries (DN-DETR, chapter 5).

    When the outputs carry ``"dn_meta"`` (training with denoising), each denoising output learns the object it was
    made from, at every decoder layer, with the matched queries' terms (:meth:`~SetCriterion.class_terms`, L1, GIoU)
    but with pairs known in advance instead of matched. Padding slots are never supervised: the cross-entropy is the
    mean over the real denoising queries (none is "no object"), the box losses are divided by the number of objects
    times the number of groups. Suffixes ``_dn`` (last layer) and ``_dn_{i}``: ``loss_ce_dn``, ``loss_bbox_dn_0``."""

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, Tensor]:
        losses = super().forward(outputs, targets)
        if "dn_meta" in outputs:
            losses.update(self.denoising_losses(outputs, targets))
        return losses

    def denoising_losses(self, outputs: dict, targets: list[dict]) -> dict[str, Tensor]:
        meta, device = outputs["dn_meta"], outputs["pred_logits"].device
        suffixes = ["dn"] + [f"dn_{i}" for i in range(len(outputs.get("aux_outputs", [])))]
        if meta["num_dn"] == 0:  # no object in the whole batch: nothing to denoise
            zero = torch.zeros((), device=device)
            return {f"{k}_{s}": zero for s in suffixes for k in ("loss_ce", "loss_bbox", "loss_giou")}
        (batch, query), target = denoising_pairs(meta, targets)
        num_boxes = meta["groups"] * count_boxes(targets, device)
        dn = outputs["dn_outputs"]
        layers = [dn, *dn.get("aux_outputs", [])]
        # every layer at once, [layers, n]: few large operations rather than many small ones per layer
        logits = torch.stack([layer["pred_logits"] for layer in layers])[:, batch, query].float()
        boxes = torch.stack([layer["pred_boxes"] for layer in layers])[:, batch, query].float()
        labels, tgt_boxes = target["labels"].expand(len(layers), -1), target["boxes"].float().expand_as(boxes)
        weight, nll = self.class_terms(logits, labels)
        loss_ce = (weight * nll).sum(-1) / process_mean(weight.sum(-1))
        loss_bbox = F.l1_loss(boxes, tgt_boxes, reduction="none").sum((1, 2)) / num_boxes
        loss_giou = generalized_box_iou_loss(box_convert(boxes, "cxcywh", "xyxy"),
                                             box_convert(tgt_boxes, "cxcywh", "xyxy"), reduction="none").sum(1) / num_boxes
        losses = {}
        for i, suffix in enumerate(suffixes):
            losses[f"loss_ce_{suffix}"] = loss_ce[i]
            if i == 0:
                losses["class_error_dn"] = class_error(logits[0].detach(), target["labels"])
            losses.update({f"loss_bbox_{suffix}": loss_bbox[i], f"loss_giou_{suffix}": loss_giou[i]})
        return losses


def denoising_pairs(meta: dict, targets: list[dict]) -> tuple[tuple[Tensor, Tensor], dict]:
    """(image index, query index) of every real denoising query, and the objects they learn (as one target dict), in
    the same order. Query ``g * pad + j`` of an image comes from its object j."""
    groups, pad = meta["groups"], meta["pad"]
    sizes = torch.tensor([len(t["labels"]) for t in targets])
    slot = torch.arange(groups * pad) % pad  # the object each query comes from
    batch, query = (slot < sizes[:, None]).nonzero(as_tuple=True)
    obj = (sizes.cumsum(0) - sizes)[batch] + slot[query]  # where that object sits among all the batch's
    return (batch, query), {"labels": torch.cat([t["labels"] for t in targets])[obj],
                            "boxes": torch.cat([t["boxes"] for t in targets])[obj]}


def class_balanced_weights(counts, beta: float) -> Tensor:
    """Cui et al.'s class-balanced weights: class ``c`` with ``n_c`` training objects weighs ``1 / E(n_c)``, where
    ``E(n) = (1 - beta^n) / (1 - beta)`` is the "effective number" of n objects: 1 with beta = 0 (every class weighs
    the same), n as beta -> 1 (inverse frequency), and never more than 1 / (1 - beta), so beyond a few times that many
    objects more add little. Scaled so that the weights average 1 over the classes; a class without objects counts as
    one."""
    n = torch.as_tensor(counts, dtype=torch.float64).clamp(min=1)
    weights = (1 - beta) / (1 - beta ** n)
    return (weights * len(weights) / weights.sum()).float()


def build_criterion(cfg: Config, class_counts=None) -> SetCriterion:
    """Matcher, loss weights (one set per decoder layer with ``aux_loss``) and criterion from a Config; with
    ``model.dn_groups > 0`` a :class:`DenoisingCriterion` whose denoising terms weigh as much as the matched ones.
    ``train.class_loss="balanced"`` needs ``class_counts``, the training objects of each class
    (``[dataset.class_counts()[c] for c in dataset.classes]``). ``train.class_loss="sigmoid_focal"`` (with
    ``model.class_head="sigmoid"``) trains and matches with the focal loss and cost of Conditional DETR."""
    t, m = cfg.train, cfg.model
    sigmoid = t.class_loss == "sigmoid_focal"
    matcher = HungarianMatcher(cost_class=t.set_cost_class, cost_bbox=t.set_cost_bbox, cost_giou=t.set_cost_giou,
                               sigmoid=sigmoid, focal_alpha=t.focal_alpha, focal_gamma=t.focal_gamma)
    weights = {"loss_ce": t.cls_loss_coef, "loss_bbox": t.bbox_loss_coef, "loss_giou": t.giou_loss_coef}
    suffixes = [""] + ([f"_{i}" for i in range(m.dec_layers - 1)] if m.aux_loss else [])
    if m.dn_groups > 0:
        suffixes += ["_dn"] + ([f"_dn_{i}" for i in range(m.dec_layers - 1)] if m.aux_loss else [])
    weight_dict = {f"{k}{s}": w for s in suffixes for k, w in weights.items()}
    extra = {}
    if t.class_loss == "balanced":
        if class_counts is None:
            raise ValueError("train.class_loss='balanced' needs the training set's class counts: "
                             "build_criterion(cfg, class_counts=[objects of each class])")
        if len(class_counts) != m.num_classes:
            raise ValueError(f"class_counts has {len(class_counts)} entries but model.num_classes is {m.num_classes}")
        extra["class_weights"] = class_balanced_weights(class_counts, t.balanced_beta)
    elif t.class_loss == "focal":
        extra["focal_gamma"] = t.focal_gamma
    elif sigmoid:
        extra.update(sigmoid=True, focal_alpha=t.focal_alpha, focal_gamma=t.focal_gamma)
    cls = DenoisingCriterion if m.dn_groups > 0 else SetCriterion
    return cls(m.num_classes, matcher, weight_dict, eos_coef=t.eos_coef, losses=["labels", "boxes", "cardinality"],
               **extra)
