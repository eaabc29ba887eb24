"""DETR with denoising queries: nothing leaks into the matching queries, inference is plain DETR,
the official checkpoint still loads."""
import dataclasses

import pytest
import torch

from detrlib.checkpoint import load_official_checkpoint
from detrlib.config import get_profile
from detrlib.criterion import build_criterion
from detrlib.model import build_model
from detrlib.model.denoising import Denoiser


def small(dn_groups=3, **changes):
    model = get_profile("smoke").model
    return dataclasses.replace(model, dn_groups=dn_groups, dropout=0.0, **changes)


def target(labels, boxes):
    return {"labels": torch.tensor(labels, dtype=torch.int64), "boxes": torch.tensor(boxes).reshape(-1, 4)}


def batch():
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(2, 64, 64, dtype=torch.bool)
    mask[1, :, 48:] = True
    return images, mask


def layers(out):
    return [out, *out.get("aux_outputs", [])]


def test_changing_the_denoising_queries_leaves_the_matching_outputs_bit_identical():
    torch.manual_seed(0)
    model = build_model(small()).train()
    images, mask = batch()
    a = [target([1, 2], [[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.3]]), target([4], [[0.5, 0.5, 0.5, 0.5]])]
    b = [target([7, 0], [[0.1, 0.8, 0.1, 0.2], [0.4, 0.2, 0.6, 0.3]]), target([3], [[0.2, 0.5, 0.1, 0.5]])]
    torch.manual_seed(1)
    out_a = model(images, mask, targets=a)
    torch.manual_seed(2)  # other noise too
    out_b = model(images, mask, targets=b)
    assert out_a["dn_meta"]["num_dn"] == out_b["dn_meta"]["num_dn"] == 6
    assert not torch.equal(out_a["dn_outputs"]["pred_boxes"], out_b["dn_outputs"]["pred_boxes"])
    for la, lb in zip(layers(out_a), layers(out_b)):
        assert torch.equal(la["pred_logits"], lb["pred_logits"])
        assert torch.equal(la["pred_boxes"], lb["pred_boxes"])


def test_groups_and_padding_slots_see_nothing_of_each_other():
    torch.manual_seed(0)
    model = build_model(small(dn_groups=2)).train()
    images, mask = batch()
    targets = [target([1, 2], [[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.3]]), target([4], [[0.5, 0.5, 0.5, 0.5]])]
    dn = model.denoiser(targets, model.num_queries)
    tokens, pos, padding, _ = model.image_tokens(images, mask)
    queries = model.query_embed.weight.expand(2, -1, -1)

    def decode(content):
        tgt = torch.cat([content, torch.zeros_like(queries)], 1)
        hs, _ = model.transformer(tokens, pos, padding, torch.cat([dn.pos, queries], 1), tgt, dn.attn_mask)
        return hs

    base = decode(dn.content)
    changed = dn.content.clone()
    changed[:, 2:4] = torch.randn(2, 2, changed.shape[-1])  # group 1 (pad 2: queries 2 and 3)
    hs = decode(changed)
    assert torch.equal(hs[:, :, :2], base[:, :, :2]) and torch.equal(hs[:, :, 4:], base[:, :, 4:])
    assert not torch.equal(hs[:, :, 2:4], base[:, :, 2:4])
    changed = dn.content.clone()
    changed[1, 1] = torch.randn(changed.shape[-1])  # image 1's padding slot in group 0
    hs = decode(changed)
    assert torch.equal(hs[:, :, :1], base[:, :, :1]) and torch.equal(hs[:, :, 2:], base[:, :, 2:])
    assert torch.equal(hs[:, 0], base[:, 0])  # image 0 is untouched


def test_inference_is_plain_detr():
    torch.manual_seed(0)
    model = build_model(small()).eval()
    vanilla = build_model(small(dn_groups=0)).eval()
    missing = vanilla.load_state_dict(model.state_dict(), strict=False)
    assert missing.missing_keys == [] and all(k.startswith("denoiser.") for k in missing.unexpected_keys)
    images, mask = batch()
    targets = [target([1], [[0.3, 0.3, 0.2, 0.2]]), target([4], [[0.5, 0.5, 0.5, 0.5]])]
    out = model(images, mask, targets=targets)  # targets are ignored outside training
    assert set(out) == {"pred_logits", "pred_boxes", "aux_outputs"}
    plain = vanilla(images, mask)
    assert torch.equal(out["pred_logits"], plain["pred_logits"]) and torch.equal(out["pred_boxes"], plain["pred_boxes"])
    assert set(model.train()(images, mask)) == {"pred_logits", "pred_boxes", "aux_outputs"}  # no targets, no denoising


def test_training_step_with_an_image_without_objects_and_a_batch_without_any():
    torch.manual_seed(0)
    cfg = get_profile("smoke")
    cfg = cfg.replace(**{"model.dn_groups": 3})
    model = build_model(cfg.model).train()
    criterion = build_criterion(cfg)
    images, mask = batch()
    targets = [target([], []), target([4, 1], [[0.5, 0.5, 0.5, 0.5], [0.2, 0.2, 0.1, 0.1]])]
    out = model(images, mask, targets=targets)
    losses = criterion(out, targets)
    assert {"loss_ce_dn", "loss_bbox_dn", "loss_giou_dn", "loss_ce_dn_0"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    criterion.total(losses).backward()
    assert model.denoiser.label_embed.weight.grad.abs().sum() > 0
    assert model.denoiser.box_embed[0].weight.grad.abs().sum() > 0

    empty = [target([], []), target([], [])]
    out = model(images, mask, targets=empty)
    assert "dn_outputs" not in out and out["dn_meta"]["num_dn"] == 0
    losses = criterion(out, empty)
    assert losses["loss_bbox_dn"].item() == 0 and all(torch.isfinite(v) for v in losses.values())


def test_bad_targets_get_a_clear_error():
    model = build_model(small()).train()
    images, mask = batch()
    with pytest.raises(ValueError, match="outside"):
        model(images, mask, targets=[target([99], [[0.5, 0.5, 0.2, 0.2]]), target([], [])])


def test_the_official_checkpoint_loads_with_the_denoiser_reported_new(tmp_path):
    torch.manual_seed(0)
    official = build_model(small(dn_groups=0))
    path = tmp_path / "detr-official.pth"
    torch.save({"model": official.state_dict()}, path)
    model = build_model(small())
    report = load_official_checkpoint(model, path)
    new = [name for name, _ in report.new]
    assert sorted(new) == sorted(k for k in model.state_dict() if k.startswith("denoiser."))
    assert len(report.loaded) == len(official.state_dict()) and not report.dropped
    assert "denoiser" in str(report)


def test_denoiser_parameter_count():
    d, c = 256, 20
    denoiser = Denoiser(c, d)
    # the label embedding (d - 1 features + the indicator) and the 2-layer box MLP
    assert sum(p.numel() for p in denoiser.parameters()) == c * (d - 1) + 2 * (d * d + d)


def test_the_heads_run_once_and_give_what_they_give_on_each_part_of_the_queries():
    torch.manual_seed(0)
    model = build_model(small()).train()
    images, mask = batch()
    targets = [target([1, 2], [[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.3]]), target([4], [[0.5, 0.5, 0.5, 0.5]])]
    decoded = {}
    model.transformer.register_forward_hook(lambda module, inputs, output: decoded.update(hs=output[0]))
    out = model(images, mask, targets=targets)
    hs, n = decoded["hs"], out["dn_meta"]["num_dn"]
    # the heads on the object queries alone, and on the denoising queries alone
    for got, part in ((out, model.predict(hs[:, :, n:])), (out["dn_outputs"], model.predict(hs[:, :, :n]))):
        assert len(layers(got)) == len(layers(part)) == len(model.transformer.decoder.layers)
        for a, b in zip(layers(got), layers(part)):
            assert torch.allclose(a["pred_logits"], b["pred_logits"], atol=1e-6)
            assert torch.allclose(a["pred_boxes"], b["pred_boxes"], atol=1e-6)
