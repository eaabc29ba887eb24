"""Matching instability: the assignment table, the share of changed queries, the probe."""
import pytest
import torch
from torch import nn

from detrlib.instability import MatchingProbe, instability, query_targets
from detrlib.matcher import HungarianMatcher


def test_query_targets_and_instability():
    a = query_targets([(torch.tensor([0, 2]), torch.tensor([1, 0])), (torch.tensor([1]), torch.tensor([0]))], 3)
    assert a.tolist() == [[1, -1, 0], [-1, 0, -1]]
    same = a.clone()
    assert instability(a, same) == 0
    # object 1 of image 0 moves from query 0 to query 1: one of the 3 matched queries changed
    b = query_targets([(torch.tensor([1, 2]), torch.tensor([1, 0])), (torch.tensor([1]), torch.tensor([0]))], 3)
    assert instability(a, b) == pytest.approx(1 / 3)
    # swapping the two objects of image 0 changes two queries
    c = query_targets([(torch.tensor([0, 2]), torch.tensor([0, 1])), (torch.tensor([1]), torch.tensor([0]))], 3)
    assert instability(a, c) == pytest.approx(2 / 3)
    assert instability(torch.full((2, 3), -1), a) == 0  # nothing matched before: nothing can change


class Fixed(nn.Module):
    """A stand-in model whose predicted boxes are a parameter."""

    def __init__(self, boxes):
        super().__init__()
        self.boxes = nn.Parameter(boxes)
        self.seen_training = []

    def forward(self, images, mask=None):
        self.seen_training.append(self.training)
        b, q = self.boxes.shape[:2]
        return {"pred_logits": torch.zeros(b, q, 3), "pred_boxes": self.boxes}


def test_probe_matches_the_fixed_batch_in_eval_mode():
    targets = [{"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.2, 0.2, 0.1, 0.1], [0.8, 0.8, 0.1, 0.1]])}]
    model = Fixed(torch.tensor([[[0.8, 0.8, 0.1, 0.1], [0.5, 0.5, 0.1, 0.1], [0.2, 0.2, 0.1, 0.1]]]))
    probe = MatchingProbe(torch.zeros(1, 3, 8, 8), torch.zeros(1, 8, 8, dtype=torch.bool), targets, HungarianMatcher())
    first = probe(model)
    assert first.tolist() == [[1, -1, 0]] and model.seen_training == [False] and model.training
    with torch.no_grad():
        model.boxes[0, [0, 1]] = model.boxes[0, [1, 0]]  # query 1 now sits on object 1
    assert instability(first, probe(model)) == pytest.approx(1 / 2)
