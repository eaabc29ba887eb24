"""Denoising queries (DN-DETR): the noise, the attention mask, the queries and their losses."""
import math

import pytest
import torch
from torchvision.ops import box_convert

from detrlib.bench import random_boxes
from detrlib.config import ConfigError, get_profile
from detrlib.criterion import DenoisingCriterion, SetCriterion, build_criterion
from detrlib.matcher import HungarianMatcher
from detrlib.model import build_model
from detrlib.model.denoising import (Denoiser, denoising_attention_mask, noise_boxes, noise_labels,
                                     sine_box_embedding)
from test_matcher import plain_giou

WEIGHTS = {"loss_ce": 1, "loss_bbox": 5, "loss_giou": 2}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def target(labels, boxes):
    return {"labels": torch.tensor(labels, dtype=torch.int64), "boxes": torch.tensor(boxes).reshape(-1, 4)}


def test_labels_flip_to_another_class_at_the_given_rate():
    labels = torch.randint(0, 5, (20000,), generator=gen(1))
    noised = noise_labels(labels, 0.2, 5, gen(2))
    flipped = noised != labels
    assert flipped.float().mean().item() == pytest.approx(0.2, abs=0.01)
    assert noised.min() >= 0 and noised.max() <= 4
    # a flipped label is uniform over the 4 other classes
    shift = (noised[flipped] - labels[flipped]) % 5
    assert torch.bincount(shift, minlength=5)[1:].div(flipped.sum()).sub(0.25).abs().max() < 0.02
    assert torch.equal(noise_labels(labels, 0.0, 5, gen(2)), labels)
    assert torch.equal(noise_labels(labels, 0.5, 1, gen(2)), labels)  # one class: nothing to flip to


def test_boxes_jitter_within_lambda_and_stay_in_the_image():
    g = gen(3)
    boxes = torch.cat([0.3 + 0.4 * torch.rand(5000, 2, generator=g), 0.05 + 0.15 * torch.rand(5000, 2, generator=g)], 1)
    lam = 0.4
    noised = noise_boxes(boxes, lam, gen(4))
    # boxes this far from the border are never clamped: the bounds hold exactly
    shift = (noised[:, :2] - boxes[:, :2]).abs() / (boxes[:, 2:] / 2)
    scale = noised[:, 2:] / boxes[:, 2:]
    assert shift.max() <= lam + 1e-5 and shift.max() > 0.95 * lam
    assert scale.min() >= 1 - lam - 1e-5 and scale.max() <= 1 + lam + 1e-5
    assert scale.min() < 1 - 0.95 * lam and scale.max() > 1 + 0.95 * lam
    # boxes at the border are clamped to the image and keep a positive size
    edge = torch.tensor([[0.05, 0.95, 0.1, 0.1], [0.5, 0.5, 1.0, 1.0]]).repeat(500, 1)
    xyxy = box_convert(noise_boxes(edge, lam, gen(5)), "cxcywh", "xyxy")
    assert xyxy.min() >= 0 and xyxy.max() <= 1
    assert (xyxy[:, 2:] > xyxy[:, :2]).all()


def test_mask_blocks_on_a_small_example():
    # 2 groups of 2 denoising queries, then 3 matching queries; 1 = may not attend
    expected = torch.tensor([
        [0, 0, 1, 1, 0, 0, 0],
        [0, 0, 1, 1, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],
    ], dtype=torch.bool)
    assert torch.equal(denoising_attention_mask(groups=2, pad=2, num_queries=3), expected)
    assert torch.equal(denoising_attention_mask(groups=3, pad=0, num_queries=2), torch.zeros(2, 2, dtype=torch.bool))


def test_sine_box_embedding_separates_boxes():
    e = sine_box_embedding(torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.52, 0.5, 0.2, 0.2]]), 32)
    assert e.shape == (2, 32) and e.abs().max() <= 1
    assert not torch.equal(e[0], e[1])
    with pytest.raises(ValueError, match="divisible by 8"):
        sine_box_embedding(torch.zeros(1, 4), 12)


def test_queries_layout_indicator_padding_and_an_image_without_objects():
    torch.manual_seed(0)
    denoiser = Denoiser(num_classes=3, hidden_dim=16, groups=2)
    targets = [target([0, 2], [[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.2]]), target([], []), target([1], [[0.5, 0.5, 0.4, 0.4]])]
    dn = denoiser(targets, num_queries=4, generator=gen(0))
    assert dn.content.shape == dn.pos.shape == (3, 4, 16)  # 2 groups x pad 2
    assert dn.attn_mask.shape == (3, 1, 8, 8) and dn.attn_mask.dtype == torch.bool
    assert torch.equal(dn.valid, torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 0]], dtype=torch.bool))
    assert dn.content[..., -1].eq(1).all()  # the indicator bit: a denoising query
    assert torch.equal(dn.content[..., :-1], denoiser.label_embed(dn.labels))
    # query g * pad + j comes from object j: labels agree with the source unless flipped
    assert dn.labels[2, 0] in range(3) and dn.boxes[0, 2].sub(targets[0]["boxes"][0]).abs().max() < 0.1
    # padding slots are hidden from every query; the rest is the block mask
    block = denoising_attention_mask(2, 2, 4)
    for b in range(3):
        hidden = torch.cat([~dn.valid[b], torch.zeros(4, dtype=torch.bool)])
        assert torch.equal(dn.attn_mask[b, 0], block | hidden[None, :])
    # no row is entirely blocked (attention would be undefined): matching queries stay visible
    assert (~dn.attn_mask).any(-1).all()
    empty = denoiser([target([], []), target([], [])], num_queries=4)
    assert empty.content.shape == (2, 0, 16) and empty.attn_mask.shape == (2, 1, 4, 4) and not empty.attn_mask.any()


def test_the_config_refuses_bad_denoising_settings():  # checked once, where a Denoiser's settings come from
    with pytest.raises(ConfigError, match=r"model.dn_box_noise must be in \[0, 1\), got 1.5"):
        get_profile("smoke").replace(**{"model.dn_box_noise": 1.5})
    with pytest.raises(ConfigError, match=r"model.dn_groups must be in \[0, 1000\], got -1"):
        get_profile("smoke").replace(**{"model.dn_groups": -1})
    assert build_model(get_profile("smoke").replace(**{"model.dn_groups": 0}).model).denoiser is None


# --- losses -------------------------------------------------------------------------------------------

def tiny_case():
    """Two classes (+ no-object), 2 groups, two images: image 0 has one object of class 1 at
    [0.6, 0.5, 0.4, 0.4], image 1 none, so the pad is 1 and image 1's two slots are padding.

    Image 0's group-0 output says class 1 with logits [0, 1, 0] at [0.5, 0.5, 0.4, 0.4]: L1 0.1, and
    GIoU 0.6 (intersection 0.12, union 0.2 = the enclosing box). Its group-1 output says
    no-object [0, 0, 2] on the exact box. The earlier layer's outputs are all-zero logits at [0.6, 0.5, 0.2, 0.4]
    (L1 0.2, GIoU 0.5) in both groups.
    """
    targets = [target([1], [[0.6, 0.5, 0.4, 0.4]]), target([], [])]
    dn = {"pred_logits": torch.tensor([[[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]], [[5.0, 0, 0], [5.0, 0, 0]]]),
          "pred_boxes": torch.tensor([[[0.5, 0.5, 0.4, 0.4], [0.6, 0.5, 0.4, 0.4]], [[0.1, 0.1, 0.1, 0.1]] * 2])}
    earlier = {"pred_logits": torch.zeros(2, 2, 3), "pred_boxes": torch.tensor([[0.6, 0.5, 0.2, 0.4]]).repeat(2, 2, 1)}
    dn["aux_outputs"] = [earlier]
    matching = {"pred_logits": torch.zeros(2, 3, 3), "pred_boxes": torch.full((2, 3, 4), 0.5)}
    matching["aux_outputs"] = [{k: v.clone() for k, v in matching.items()}]
    outputs = {**matching, "dn_outputs": dn, "dn_meta": {"groups": 2, "pad": 1, "num_dn": 2}}
    return outputs, targets


def dn_criterion():
    return DenoisingCriterion(2, HungarianMatcher(), WEIGHTS, eos_coef=0.1, losses=["labels", "boxes", "cardinality"])


def test_denoising_losses_equal_hand_computed_values():
    outputs, targets = tiny_case()
    losses = dn_criterion()(outputs, targets)
    ce_right = math.log(2 + math.e) - 1  # -log softmax([0, 1, 0])[1]
    ce_wrong = math.log(2 + math.e ** 2)  # -log softmax([0, 0, 2])[1]
    assert losses["loss_ce_dn"].item() == pytest.approx((ce_right + ce_wrong) / 2, rel=1e-6)
    assert losses["class_error_dn"].item() == pytest.approx(50)
    # box losses: summed over the 2 denoising queries, divided by 1 object x 2 groups
    assert losses["loss_bbox_dn"].item() == pytest.approx((0.1 + 0) / 2, rel=1e-5)
    assert losses["loss_giou_dn"].item() == pytest.approx((0.4 + 0) / 2, rel=1e-5)
    # the earlier layer: uniform logits over 3 classes, L1 0.2 and GIoU 0.5 in each group
    assert losses["loss_ce_dn_0"].item() == pytest.approx(math.log(3), rel=1e-6)
    assert losses["loss_bbox_dn_0"].item() == pytest.approx(0.2, rel=1e-5)
    assert losses["loss_giou_dn_0"].item() == pytest.approx(0.5, rel=1e-5)
    # the matching part is SetCriterion's, unchanged
    plain = SetCriterion(2, HungarianMatcher(), WEIGHTS, eos_coef=0.1, losses=["labels", "boxes", "cardinality"])
    for k, v in plain(outputs, targets).items():
        assert torch.equal(losses[k], v)
    assert not any("dn" in k for k in plain(outputs, targets))


def test_padding_slots_are_never_supervised():
    outputs, targets = tiny_case()
    dn = outputs["dn_outputs"]
    for layer in [dn, *dn["aux_outputs"]]:
        layer["pred_logits"].requires_grad_()
        layer["pred_boxes"].requires_grad_()
    crit = dn_criterion()
    losses = crit(outputs, targets)
    sum(v for k, v in losses.items() if "_dn" in k and k.startswith("loss")).backward()
    for layer in [dn, *dn["aux_outputs"]]:
        # image 1 (no objects) is all padding: no gradient reaches it; image 0 gets one
        assert layer["pred_logits"].grad[1].eq(0).all() and layer["pred_boxes"].grad[1].eq(0).all()
        assert layer["pred_logits"].grad[0].abs().sum() > 0
    # whatever the padding slots predict, even NaN, the losses stay the same
    nan = {k: v.detach().clone() for k, v in dn.items() if k != "aux_outputs"}
    nan["pred_logits"][1] = float("nan")
    nan["pred_boxes"][1] = float("nan")
    nan["aux_outputs"] = dn["aux_outputs"]
    again = crit({**outputs, "dn_outputs": nan}, targets)
    for k in losses:
        if "_dn" in k:
            assert torch.equal(again[k], losses[k].detach()), k


def test_a_batch_without_objects_gives_zero_denoising_losses():
    outputs, _ = tiny_case()
    empty = [target([], []), target([], [])]
    no_dn = {k: v for k, v in outputs.items() if k != "dn_outputs"}
    losses = dn_criterion()({**no_dn, "dn_meta": {"groups": 2, "pad": 0, "num_dn": 0}}, empty)
    dn_keys = {k for k in losses if "_dn" in k}
    assert dn_keys == {f"{k}_{s}" for k in ("loss_ce", "loss_bbox", "loss_giou") for s in ("dn", "dn_0")}
    assert all(losses[k].item() == 0 for k in dn_keys)
    assert all(torch.isfinite(v) for v in losses.values())


def test_denoising_losses_only_when_the_outputs_carry_them():
    outputs, targets = tiny_case()
    plain = {k: v for k, v in outputs.items() if not k.startswith("dn_")}
    assert not any("_dn" in k for k in dn_criterion()(plain, targets))  # evaluation: vanilla outputs


def test_build_criterion_weighs_denoising_terms_like_matched_ones(monkeypatch):
    monkeypatch.delenv("DETRLIB_PROFILE", raising=False)
    cfg = get_profile("quick").replace(**{"model.dec_layers": 3, "model.dn_groups": 5})
    crit = build_criterion(cfg)
    assert isinstance(crit, DenoisingCriterion)
    assert crit.weight_dict["loss_bbox_dn"] == cfg.train.bbox_loss_coef
    assert {"loss_ce_dn_0", "loss_giou_dn_1"} <= set(crit.weight_dict) and "loss_ce_dn_2" not in crit.weight_dict
    off = build_criterion(cfg.replace(**{"model.dn_groups": 0}))
    assert type(off) is SetCriterion and not any("dn" in k for k in off.weight_dict)


def test_step_benchmark_times_both_configurations():
    import argparse

    from detrlib.bench import load_all

    entry = load_all()["step"]
    parser = argparse.ArgumentParser()
    entry.add_arguments(parser)
    args = parser.parse_args(["--profile", "quick", "--batch", "2", "--size", "64", "--repeats", "1", "--dn",
                              "--dn-groups", "2", "--objects", "1", "3"])
    rows = entry.run(args)
    assert [r["dn_groups"] for r in rows] == [0, 2]
    assert rows[1]["queries"] == rows[0]["queries"] + 2 * 3 and rows[1]["dn overhead"].endswith("%")
    assert all(r["detrlib s/step"] > 0 and "busy s/step" not in r for r in rows)


def plain_denoising_losses(outputs, targets, class_weight, focal_gamma=0.0):
    """The denoising terms written out query by query: query g * pad + j of image b learns object j
    of image b, in every group g, at every decoder layer."""
    meta, dn = outputs["dn_meta"], outputs["dn_outputs"]
    groups, pad = meta["groups"], meta["pad"]
    objects = groups * max(1, sum(len(t["labels"]) for t in targets))
    losses = {}
    for suffix, layer in zip(["dn"] + [f"dn_{i}" for i in range(len(dn["aux_outputs"]))], [dn, *dn["aux_outputs"]]):
        ce = weights = l1 = giou = wrong = 0.0
        for b, t in enumerate(targets):
            for g in range(groups):
                for j, (label, box) in enumerate(zip(t["labels"].tolist(), t["boxes"].tolist())):
                    logits, pred = layer["pred_logits"][b, g * pad + j].tolist(), layer["pred_boxes"][b, g * pad + j].tolist()
                    p = math.exp(logits[label]) / sum(math.exp(v) for v in logits)
                    ce += class_weight[label] * (1 - p) ** focal_gamma * -math.log(p)
                    weights += class_weight[label]
                    wrong += max(range(len(logits)), key=logits.__getitem__) != label
                    l1 += sum(abs(u - v) for u, v in zip(pred, box))
                    giou += 1 - plain_giou(pred, box)
        losses.update({f"loss_ce_{suffix}": ce / weights, f"loss_bbox_{suffix}": l1 / objects,
                       f"loss_giou_{suffix}": giou / objects})
        if suffix == "dn":
            losses["class_error_dn"] = 100 * wrong / (groups * sum(len(t["labels"]) for t in targets))
    return losses


def random_dn_case(seed, num_classes=4, groups=3, layers=3, queries=5):
    """Random denoising outputs for a batch of 4 images with 0..3 objects each."""
    g = gen(seed)
    sizes = [int(torch.randint(0, 4, (), generator=g)) for _ in range(4)]
    sizes[0] = max(sizes[0], 1)
    targets = []
    for n in sizes:
        targets.append({"labels": torch.randint(0, num_classes, (n,), generator=g), "boxes": random_boxes(n, g)})
    pad = max(sizes)

    def head(q):
        return {"pred_logits": torch.randn(4, q, num_classes + 1, generator=g), "pred_boxes": random_boxes((4, q), g)}

    dn, matching = head(groups * pad), head(queries)
    dn["aux_outputs"] = [head(groups * pad) for _ in range(layers - 1)]
    matching["aux_outputs"] = [head(queries) for _ in range(layers - 1)]
    return {**matching, "dn_outputs": dn, "dn_meta": {"groups": groups, "pad": pad, "num_dn": groups * pad}}, targets


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("class_loss", ["ce", "balanced", "focal"])
def test_denoising_losses_equal_the_query_by_query_computation(seed, class_loss):
    outputs, targets = random_dn_case(seed)
    class_weights = torch.tensor([0.5, 2.0, 1.0, 1.5]) if class_loss == "balanced" else None
    gamma = 2.0 if class_loss == "focal" else 0.0
    crit = DenoisingCriterion(4, HungarianMatcher(), WEIGHTS, eos_coef=0.1, losses=["labels", "boxes", "cardinality"],
                              class_weights=class_weights, focal_gamma=gamma)
    losses = crit(outputs, targets)
    expected = plain_denoising_losses(outputs, targets, crit.empty_weight.tolist(), gamma)
    assert {k for k in losses if "_dn" in k} == set(expected)
    for k, v in expected.items():
        assert losses[k].item() == pytest.approx(v, rel=1e-5, abs=1e-6), k
