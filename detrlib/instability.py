"""Matching instability: how often the object a query answers for changes during training.

Early in training the predictions move a lot, so Hungarian matching gives an object to one query at one evaluation
and to another at the next: the queries are taught contradicting things (Li et al. 2022 measure this for DN-DETR).
:class:`MatchingProbe` matches one fixed batch at each evaluation; :func:`instability` compares two such matchings.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from detrlib.matcher import HungarianMatcher


def query_targets(indices: list[tuple[Tensor, Tensor]], num_queries: int) -> Tensor:
    """The matcher's pairs as ``[B, Q]`` int64: the object each query is matched to, -1 for none."""
    assigned = torch.full((len(indices), num_queries), -1, dtype=torch.int64)
    for b, (src, tgt) in enumerate(indices):
        assigned[b, src] = tgt
    return assigned


def instability(previous: Tensor, current: Tensor) -> float:
    """The share of queries matched to an object in ``previous`` that are matched to another object, or to none, in
    ``current`` (both from :func:`query_targets`). When every object is matched (objects <= queries), this is also
    the share of objects whose query changed."""
    matched = previous >= 0
    if not matched.any():
        return 0.0
    return (current[matched] != previous[matched]).float().mean().item()


class MatchingProbe:
    """Matches the last decoder layer's predictions on a fixed batch: ``probe(model) -> [B, Q]``. The model runs in
    evaluation mode (no dropout, no denoising queries) and is left in the mode it was in."""

    def __init__(self, images: Tensor, mask: Tensor, targets: list[dict], matcher: HungarianMatcher):
        self.images, self.mask, self.targets, self.matcher = images, mask, targets, matcher

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> Tensor:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in self.targets]
        outputs = model(self.images.to(device), self.mask.to(device))
        model.train(was_training)
        return query_targets(self.matcher(outputs, targets), outputs["pred_logits"].shape[1])
