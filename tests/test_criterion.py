"""SetCriterion's losses against values computed by hand on tiny inputs."""
import json
import math

import pytest
import torch
import torch.multiprocessing as mp

from detrlib.config import get_profile
from detrlib.criterion import SetCriterion, build_criterion, count_boxes
from detrlib.matcher import HungarianMatcher

EOS = 0.1
WEIGHTS = {"loss_ce": 1, "loss_bbox": 5, "loss_giou": 2}


def criterion(losses=("labels", "boxes", "cardinality"), cls=SetCriterion):
    return cls(2, HungarianMatcher(), WEIGHTS, eos_coef=EOS, losses=list(losses))


def tiny():
    """Two classes (+ no-object = 2), two queries, one object of class 1.

    Prediction 0 is [0.3, 0.3, 0.7, 0.7] and the object [0.4, 0.3, 0.8, 0.7] (x0, y0, x1, y1):
    intersection 0.3 x 0.4 = 0.12, union 0.16 + 0.16 - 0.12 = 0.2, IoU 0.6, and the enclosing box
    [0.3, 0.3, 0.8, 0.7] has area 0.2 = the union, so GIoU = 0.6. Prediction 1 is far away.
    """
    outputs = {"pred_logits": torch.tensor([[[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]]]),
               "pred_boxes": torch.tensor([[[0.5, 0.5, 0.4, 0.4], [0.1, 0.1, 0.1, 0.1]]])}
    targets = [{"boxes": torch.tensor([[0.6, 0.5, 0.4, 0.4]]), "labels": torch.tensor([1])}]
    return outputs, targets


def test_losses_match_hand_computed_values():
    outputs, targets = tiny()
    losses = criterion()(outputs, targets)
    # prediction 0 -> class 1 with weight 1; prediction 1 -> no-object with weight EOS
    ce0 = math.log(2 + math.e) - 1
    ce1 = math.log(2 + math.e ** 2) - 2
    assert losses["loss_ce"].item() == pytest.approx((ce0 + EOS * ce1) / (1 + EOS), rel=1e-6)
    assert losses["loss_bbox"].item() == pytest.approx(0.1, rel=1e-5)
    assert losses["loss_giou"].item() == pytest.approx(0.4, rel=1e-5)
    assert losses["cardinality_error"].item() == 0  # one predicted object, one true object
    assert losses["class_error"].item() == 0
    total = criterion().total(losses).item()
    assert total == pytest.approx(losses["loss_ce"].item() + 5 * 0.1 + 2 * 0.4, rel=1e-5)


def test_box_losses_are_divided_by_the_objects_of_the_whole_batch():
    g = torch.Generator().manual_seed(0)
    outputs = {"pred_logits": torch.zeros(2, 3, 3), "pred_boxes": torch.rand(2, 3, 4, generator=g) * 0.3 + 0.2}
    targets = [{"boxes": outputs["pred_boxes"][0, :2] + 0.01, "labels": torch.tensor([0, 1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    losses = criterion()(outputs, targets)
    assert losses["loss_bbox"].item() == pytest.approx(8 * 0.01 / 2, rel=1e-4)  # 2 boxes x 4 coordinates
    # with all-zero logits argmax is class 0, so each image "predicts" 3 objects: |3-2| and |3-0|
    assert losses["cardinality_error"].item() == pytest.approx(2.0)


def test_empty_batch_gives_finite_losses():
    outputs, _ = tiny()
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    losses = criterion()(outputs, empty)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_bbox"].item() == 0 and losses["class_error"].item() == 0


def test_aux_losses_get_their_own_matching_and_suffix():
    outputs, targets = tiny()
    # in the earlier layer prediction 1 sits on the object: it, not prediction 0, must be matched
    earlier = {"pred_logits": outputs["pred_logits"].clone(),
               "pred_boxes": torch.tensor([[[0.1, 0.1, 0.1, 0.1], [0.6, 0.5, 0.4, 0.4]]])}
    losses = criterion()({**outputs, "aux_outputs": [earlier]}, targets)
    assert {"loss_ce_0", "loss_bbox_0", "loss_giou_0", "cardinality_error_0"} <= set(losses)
    assert "class_error_0" not in losses  # logged for the last layer only, as in DETR
    assert losses["loss_bbox_0"].item() == pytest.approx(0, abs=1e-6)
    assert losses["loss_giou_0"].item() == pytest.approx(0, abs=1e-6)
    # prediction 1 now learns class 1 and prediction 0 no-object
    ce_obj = math.log(2 + math.e ** 2)  # -log softmax([0, 0, 2])[1]
    ce_eos = math.log(2 + math.e)  # -log softmax([0, 1, 0])[2]
    assert losses["loss_ce_0"].item() == pytest.approx((ce_obj + EOS * ce_eos) / (1 + EOS), rel=1e-6)


def test_get_loss_works_with_given_indices():
    outputs, targets = tiny()
    given = [(torch.tensor([1]), torch.tensor([0]))]  # e.g. denoising queries with known objects
    losses = criterion().get_loss("boxes", outputs, targets, given, num_boxes=1)
    assert losses["loss_bbox"].item() == pytest.approx(0.5 + 0.4 + 0.3 + 0.3, rel=1e-5)


def test_classification_loss_can_be_swapped_by_a_subclass():
    class Constant(SetCriterion):
        def loss_labels(self, outputs, targets, indices, num_boxes, log=True):
            return {"loss_ce": outputs["pred_logits"].sum() * 0 + 7}

    outputs, targets = tiny()
    assert criterion(cls=Constant)(outputs, targets)["loss_ce"].item() == 7
    with pytest.raises(ValueError, match=r"unknown loss\(es\) \['focal'\]"):
        criterion(losses=["focal"])


def test_gradients_reach_logits_and_boxes_in_fp32_from_bf16():
    outputs, targets = tiny()
    half = {k: v.to(torch.bfloat16).requires_grad_() for k, v in outputs.items()}
    crit = criterion()
    losses = crit(half, targets)
    assert all(v.dtype == torch.float32 for v in losses.values())
    assert not losses["cardinality_error"].requires_grad and not losses["class_error"].requires_grad
    crit.total(losses).backward()
    assert half["pred_logits"].grad.abs().sum() > 0 and half["pred_boxes"].grad.abs().sum() > 0
    full = crit({k: v.detach().float() for k, v in half.items()}, targets)
    for k in full:
        assert losses[k].item() == pytest.approx(full[k].item(), rel=1e-6)


def test_build_criterion_reads_the_config(monkeypatch):
    monkeypatch.delenv("DETRLIB_PROFILE", raising=False)
    cfg = get_profile("quick").replace(**{"model.dec_layers": 3, "model.dn_groups": 0, "train.bbox_loss_coef": 4.0,
                                          "train.set_cost_giou": 1.5, "train.eos_coef": 0.2})
    crit = build_criterion(cfg)
    assert crit.num_classes == cfg.model.num_classes and crit.matcher.cost_giou == 1.5
    assert crit.empty_weight[-1].item() == pytest.approx(0.2) and crit.empty_weight[:-1].eq(1).all()
    assert crit.weight_dict["loss_bbox"] == 4.0 and crit.weight_dict["loss_bbox_1"] == 4.0
    assert "loss_ce_2" not in crit.weight_dict  # 3 decoder layers: the last plus aux 0 and 1
    no_aux = build_criterion(cfg.replace(**{"model.aux_loss": False}))
    assert set(no_aux.weight_dict) == {"loss_ce", "loss_bbox", "loss_giou"}


def _ddp_worker(rank, world, init_file, out_dir):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    objects = [3, 1][rank]
    targets = [{"boxes": torch.full((objects, 4), 0.5), "labels": torch.zeros(objects, dtype=torch.int64)}]
    outputs = {"pred_logits": torch.zeros(1, 4, 3), "pred_boxes": torch.full((1, 4, 4), 0.4)}
    losses = criterion()(outputs, targets)
    result = {"num_boxes": count_boxes(targets, torch.device("cpu")), "loss_bbox": losses["loss_bbox"].item()}
    (out_dir / f"{rank}.json").write_text(json.dumps(result))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_num_boxes_is_summed_over_ddp_processes(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), tmp_path), nprocs=2)
    results = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    # 3 + 1 objects over 2 processes: each divides by 4 / 2 = 2, so DDP's gradient average
    # weighs every box of the global batch the same
    assert [r["num_boxes"] for r in results] == [2.0, 2.0]
    for r, objects in zip(results, [3, 1]):
        assert r["loss_bbox"] == pytest.approx(objects * 4 * 0.1 / 2, rel=1e-5)
