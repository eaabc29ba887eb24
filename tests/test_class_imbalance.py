"""The classification-loss options for class imbalance (chapter 8) against hand-computed values."""
import math

import pytest
import torch

from detrlib.config import ConfigError, get_profile
from detrlib.criterion import DenoisingCriterion, SetCriterion, build_criterion, class_balanced_weights
from detrlib.matcher import HungarianMatcher

from test_criterion import EOS, WEIGHTS, tiny
from test_denoising import tiny_case

# tiny(): prediction 0 (logits [0, 1, 0]) learns class 1, prediction 1 (logits [0, 0, 2]) no-object
P0 = math.e / (2 + math.e)
P1 = math.e ** 2 / (2 + math.e ** 2)
CE0, CE1 = -math.log(P0), -math.log(P1)


def criterion(cls=SetCriterion, **kwargs):
    return cls(2, HungarianMatcher(), WEIGHTS, eos_coef=EOS, losses=["labels", "boxes", "cardinality"], **kwargs)


def quick_cfg(monkeypatch, **changes):
    monkeypatch.delenv("DETRLIB_PROFILE", raising=False)
    return get_profile("quick").replace(**{"model.num_classes": 2, "model.dn_groups": 0, **changes})


def test_class_balanced_weights_by_hand():
    # effective numbers with beta 0.9: E(100) = (1 - 0.9^100) / 0.1, E(10) = (1 - 0.9^10) / 0.1
    e100, e10 = (1 - 2.6561398887587544e-05) / 0.1, (1 - 0.3486784401) / 0.1
    w = [1 / e100, 1 / e10]
    expected = [2 * x / sum(w) for x in w]  # averaged to 1 over the two classes
    assert class_balanced_weights([100, 10], 0.9).tolist() == pytest.approx(expected, rel=1e-6)
    # beta 0: every class weighs the same; beta near 1: inverse frequency
    assert class_balanced_weights([100, 10, 1], 0.0).tolist() == pytest.approx([1, 1, 1])
    near = class_balanced_weights([100, 10], 1 - 1e-9)
    assert (near[1] / near[0]).item() == pytest.approx(10, rel=1e-4)
    # a class without training objects counts as one; beta must lie in [0, 1)
    assert torch.equal(class_balanced_weights([5, 0], 0.9), class_balanced_weights([5, 1], 0.9))
    with pytest.raises(ConfigError, match=r"train.balanced_beta must be in \[0, 1\)"):
        get_profile("smoke").replace(**{"train.balanced_beta": 1.0})


def test_class_weights_enter_the_cross_entropy_like_eos_coef():
    outputs, targets = tiny()
    losses = criterion(class_weights=torch.tensor([0.5, 3.0]))(outputs, targets)
    # class 1 weighs 3, no-object 0.1; class 0's weight is unused: no prediction targets it
    assert losses["loss_ce"].item() == pytest.approx((3 * CE0 + EOS * CE1) / (3 + EOS), rel=1e-6)
    # the box losses do not change
    plain = criterion()(outputs, targets)
    assert torch.equal(losses["loss_bbox"], plain["loss_bbox"]) and torch.equal(losses["loss_giou"], plain["loss_giou"])
    with pytest.raises(ValueError, match="3 entries for 2 classes"):
        criterion(class_weights=torch.ones(3))


def test_focal_loss_by_hand():
    outputs, targets = tiny()
    losses = criterion(focal_gamma=2.0)(outputs, targets)
    expected = ((1 - P0) ** 2 * CE0 + EOS * (1 - P1) ** 2 * CE1) / (1 + EOS)
    assert losses["loss_ce"].item() == pytest.approx(expected, rel=1e-6)
    # gamma 0 is the cross-entropy itself
    ce = criterion()(outputs, targets)["loss_ce"]
    assert torch.equal(criterion(focal_gamma=0.0)(outputs, targets)["loss_ce"], ce)
    # the easier prediction (P1 = 0.79 > P0 = 0.58) loses more of its weight
    assert (1 - P1) ** 2 < (1 - P0) ** 2
    with pytest.raises(ValueError, match="focal_gamma"):
        criterion(focal_gamma=-1.0)


def test_focal_loss_reaches_the_denoising_terms():
    outputs, targets = tiny_case()
    gamma = 2.0
    losses = criterion(DenoisingCriterion, focal_gamma=gamma)(outputs, targets)
    # the two denoising outputs of image 0 both learn class 1: logits [0, 1, 0] and [0, 0, 2]
    p_right, p_wrong = P0, 1 / (2 + math.e ** 2)
    expected = ((1 - p_right) ** gamma * -math.log(p_right) + (1 - p_wrong) ** gamma * -math.log(p_wrong)) / 2
    assert losses["loss_ce_dn"].item() == pytest.approx(expected, rel=1e-6)
    # the earlier layer: uniform logits over 3 classes, p = 1/3 for both
    assert losses["loss_ce_dn_0"].item() == pytest.approx((2 / 3) ** gamma * math.log(3), rel=1e-6)


def test_build_criterion_reads_the_class_loss(monkeypatch):
    cfg = quick_cfg(monkeypatch, **{"train.class_loss": "balanced", "train.balanced_beta": 0.9})
    crit = build_criterion(cfg, class_counts=[100, 10])
    assert crit.empty_weight[:-1].tolist() == pytest.approx(class_balanced_weights([100, 10], 0.9).tolist())
    assert crit.empty_weight[-1].item() == pytest.approx(cfg.train.eos_coef) and crit.focal_gamma == 0
    with pytest.raises(ValueError, match="class counts"):
        build_criterion(cfg)
    with pytest.raises(ValueError, match="3 entries"):
        build_criterion(cfg, class_counts=[1, 2, 3])
    focal = build_criterion(cfg.replace(**{"train.class_loss": "focal", "train.focal_gamma": 1.5,
                                           "model.dn_groups": 5}))
    assert isinstance(focal, DenoisingCriterion) and focal.focal_gamma == 1.5
    assert focal.empty_weight[:-1].eq(1).all()
    ce = build_criterion(cfg.replace(**{"train.class_loss": "ce"}), class_counts=[100, 10])
    assert ce.empty_weight[:-1].eq(1).all() and ce.focal_gamma == 0  # counts are used by "balanced" only
    with pytest.raises(ValueError, match="train.class_loss must be one of ce, balanced, focal, sigmoid_focal, got 'lvis'"):
        cfg.replace(**{"train.class_loss": "lvis"})  # refused when the config is made
