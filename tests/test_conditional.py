"""Conditional DETR as the paper and its official code define it: the attention score splits into
content and spatial parts, the spatial query is the reference point's sine encoding scaled by λ_q
(1 at the first layer), one reference head serves every layer, boxes are predicted relative to the
point, and the sigmoid focal loss and matching cost equal the formulas written out by hand."""
import math

import pytest
import torch
from scipy.optimize import linear_sum_assignment

from detrlib.checkpoint import load_trained, save_best
from detrlib.config import ConfigError, get_profile
from detrlib.criterion import build_criterion
from detrlib.matcher import focal_cost
from detrlib.model import PostProcess, build_model, record_attention
from detrlib.model.conditional import (CONDITIONAL_DETR, ConditionalAttention, ConditionalDecoder,
                                       ConditionalDecoderLayer, sine_point_embedding)
from detrlib.model.position_encoding import PositionEmbeddingSine
from detrlib.model.transformer import DecoderLayer

ALPHA, GAMMA = 0.25, 2.0


def conditional_config(**changes):
    return get_profile("smoke").replace(**CONDITIONAL_DETR, **changes)


def batch():
    g = torch.Generator().manual_seed(0)
    images, mask = torch.randn(2, 3, 64, 64, generator=g), torch.zeros(2, 64, 64, dtype=torch.bool)
    mask[1, :, 40:] = True
    targets = [{"boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]]), "labels": torch.tensor([1, 4])},
               {"boxes": torch.tensor([[0.4, 0.5, 0.5, 0.5]]), "labels": torch.tensor([2])}]
    return images, mask, targets


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(conditional_config().model).eval()


def test_the_field_values_build_the_method_on_top_of_detrs_tensors(model):
    plain = build_model(get_profile("smoke").model)
    decoder = model.transformer.decoder
    assert type(decoder) is ConditionalDecoder and all(type(m) is ConditionalDecoderLayer for m in decoder.layers)
    assert all(type(m) is DecoderLayer for m in plain.transformer.decoder.layers)
    plain_decoder = plain.transformer.decoder
    assert plain_decoder.reference_head is None and plain_decoder.reference_points(None) is None
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    plain_shapes = {k: v.shape for k, v in plain.state_dict().items()}
    c, d = model.num_classes, model.transformer.d_model
    assert shapes["class_embed.weight"] == (c, d) and plain_shapes["class_embed.weight"] == (c + 1, d)  # no no-object
    assert all(shapes[k] == s for k, s in plain_shapes.items() if not k.startswith("class_embed"))
    new = set(shapes) - set(plain_shapes)
    per_layer = {k.split(".", 4)[-1] for k in new if ".layers." in k and k.startswith("transformer.decoder.layers")}
    assert per_layer == {f"multihead_attn.{m}.{p}" for m in ("spatial_query", "spatial_key")
                         for p in ("weight", "bias")}
    shared = {k.removeprefix("transformer.decoder.") for k in new if not k.startswith("transformer.decoder.layers")}
    assert shared == {f"{m}.{p}" for m in ("reference_head.layers.0", "reference_head.layers.1", "query_scale.layers.0",
                                           "query_scale.layers.1", "first_query_pos") for p in ("weight", "bias")}
    # one reference head, the decoder's, for every layer
    heads = [n for n, _ in model.named_modules() if n.endswith("reference_head")]
    assert heads == ["transformer.decoder.reference_head"]


def test_the_reference_points_encoding_is_the_keys_position_encoding():
    d, h, w = 32, 5, 7
    keys = PositionEmbeddingSine(d // 2)(torch.zeros(1, d, h, w))[0]  # [d, h, w]: row features, then column
    for i, j in [(0, 0), (2, 3), (4, 6)]:
        point = torch.tensor([(j + 1) / w, (i + 1) / h])  # x, y of the cell as the keys normalise it
        torch.testing.assert_close(sine_point_embedding(point, d), keys[:, i, j], atol=1e-4, rtol=0)


def seen_by_decoder(model, images, mask):
    """What the decoder and each layer's cross-attention were called with, and the attention maps."""
    decoder, seen = model.transformer.decoder, {}
    hooks = [decoder.register_forward_pre_hook(lambda m, args: seen.update(decoder=args)),
             decoder.layers[0].register_forward_hook(lambda m, args, out: seen.update(layer0=out))]
    for i, layer in enumerate(decoder.layers):
        hooks.append(layer.multihead_attn.register_forward_hook(
            lambda m, args, out, i=i: seen.update({f"attn{i}": (args, out[0])})))
    with torch.no_grad(), record_attention(model) as maps:
        model(images, mask)
    for h in hooks:
        h.remove()
    return seen, maps


def by_hand(attn, query, key, value, spatial_query, key_pos, padding, content_pos):
    """Conditional cross-attention from its definition: per head, score = (content q · content k +
    spatial q · key position) / sqrt(2 d / heads)."""
    d, h = attn.d_model, attn.nheads
    w, b = attn.in_proj_weight, attn.in_proj_bias

    def heads(x):
        return x.reshape(*x.shape[:2], h, d // h).transpose(1, 2)

    content_q, content_k = query @ w[:d].T + b[:d], key @ w[d:2 * d].T + b[d:2 * d]
    if content_pos is not None:  # the first layer: positions in the content halves too
        content_q, content_k = content_q + content_pos, content_k + attn.spatial_key(key_pos)
    content = heads(content_q) @ heads(content_k).transpose(-1, -2)
    spatial = heads(attn.spatial_query(spatial_query)) @ heads(attn.spatial_key(key_pos)).transpose(-1, -2)
    scores = (content + spatial) / math.sqrt(2 * d // h)
    weights = scores.masked_fill(padding[:, None, None, :], float("-inf")).softmax(-1)
    return weights, attn.out_proj((weights @ heads(value @ w[2 * d:].T + b[2 * d:])).transpose(1, 2).flatten(2))


def test_a_score_is_content_with_content_plus_spatial_query_with_key_position(model):
    images, mask, _ = batch()
    seen, maps = seen_by_decoder(model, images, mask)
    decoder = model.transformer.decoder
    query_pos = seen["decoder"][3]
    with torch.no_grad():
        s = decoder.reference_head(query_pos).sigmoid()
        position = sine_point_embedding(s, query_pos.shape[-1])
        for i, scale in ((0, 1), (1, decoder.query_scale(seen["layer0"]))):  # λ_q is the identity at layer 0
            args, out = seen[f"attn{i}"]
            query, key, value, spatial_query, key_pos, padding, content_pos = args
            torch.testing.assert_close(spatial_query, scale * position, rtol=0, atol=0)
            if i == 0:
                torch.testing.assert_close(content_pos, decoder.first_query_pos(query_pos), rtol=0, atol=0)
            else:
                assert content_pos is None
            attn = decoder.layers[i].multihead_attn
            weights, expected = by_hand(attn, *args)
            assert isinstance(attn, ConditionalAttention) and padding[1].any()
            torch.testing.assert_close(maps[f"transformer.decoder.layers.{i}.multihead_attn"], weights)
            torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


def test_boxes_start_on_the_reference_points_and_move_with_them():
    torch.manual_seed(0)
    model = build_model(conditional_config().model).eval()
    images, mask, _ = batch()
    decoder = model.transformer.decoder
    with torch.no_grad():
        reference = decoder.reference_points(model.query_embed(2)[1])
        out = model(images, mask)
        for layer in [out, *out["aux_outputs"]]:  # the box head's last layer starts at zero
            torch.testing.assert_close(layer["pred_boxes"][..., :2], reference)
            assert (layer["pred_boxes"][..., 2:] == 0.5).all()
        shift = torch.tensor([0.5, -0.25])
        decoder.reference_head.layers[-1].bias += shift  # every point moves by `shift` in logit space
        moved = model(images, mask)["pred_boxes"]
        torch.testing.assert_close(torch.logit(moved[..., :2]), torch.logit(reference) + shift)

        # with a trained (here random) head: the centre is the head's offset from the point, in logit space
        torch.nn.init.normal_(model.bbox_embed.layers[-1].weight)
        hs = torch.randn(2, 2, 3, model.transformer.d_model)
        ref, other = torch.rand(2, 3, 2) * 0.8 + 0.1, torch.rand(2, 3, 2) * 0.8 + 0.1
        boxes, head = model.boxes(hs, ref), model.bbox_embed(hs)
        torch.testing.assert_close(torch.logit(boxes[..., :2]), head[..., :2] + torch.logit(ref),
                                   atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(boxes[..., 2:], head[..., 2:].sigmoid())
        torch.testing.assert_close(model.boxes(hs, other)[..., 2:], boxes[..., 2:])
        assert torch.equal(model.boxes(hs), head.sigmoid())  # DETR's boxes: no reference, nothing added


def test_the_focal_cost_is_the_official_formula():
    logits = torch.tensor([[-2.0, 0.0, 1.5, 4.0]])
    cost = focal_cost(logits, ALPHA, GAMMA)
    for x, got in zip(logits[0].tolist(), cost[0].tolist()):
        p = 1 / (1 + math.exp(-x))
        negative = (1 - ALPHA) * p ** GAMMA * -math.log(1 - p + 1e-8)
        positive = ALPHA * (1 - p) ** GAMMA * -math.log(p + 1e-8)
        assert got == pytest.approx(positive - negative, rel=1e-5)
    assert cost[0, 1].item() == pytest.approx(-0.125 * math.log(2), rel=1e-5)  # p = 1/2: (α - (1 - α)) / 4 · log 2


def plain_giou(a, b):
    """GIoU of two cx, cy, w, h boxes, in plain Python."""
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = max(0, min(ax1, bx1) - max(ax0, bx0)) * max(0, min(ay1, by1) - max(ay0, by0))
    union = a[2] * a[3] + b[2] * b[3] - inter
    hull = (max(ax1, bx1) - min(ax0, bx0)) * (max(ay1, by1) - min(ay0, by0))
    return inter / union - (hull - union) / hull


def plain_conditional_losses(logits, boxes, targets, weights=(2.0, 5.0, 2.0)):
    """Conditional DETR's matching and losses written out with plain torch and scipy: the focal cost,
    L1 and GIoU pair by pair, scipy's assignment, then the sigmoid focal loss over every prediction
    and class, L1 and 1 - GIoU over the matched pairs, each divided by the number of objects."""
    w_class, w_bbox, w_giou = weights
    indices, focal, l1, giou = [], 0.0, 0.0, 0.0
    for b, t in enumerate(targets):
        p = logits[b].sigmoid()
        cost = [[w_class * (ALPHA * (1 - p[i, c]) ** GAMMA * -torch.log(p[i, c] + 1e-8)
                            - (1 - ALPHA) * p[i, c] ** GAMMA * -torch.log(1 - p[i, c] + 1e-8)).item()
                 + w_bbox * (boxes[b, i] - box).abs().sum().item()
                 - w_giou * plain_giou(boxes[b, i].tolist(), box.tolist())
                 for c, box in zip(t["labels"].tolist(), t["boxes"])] for i in range(len(p))]
        rows, cols = linear_sum_assignment(cost) if len(t["labels"]) else ([], [])
        indices.append((list(rows), list(cols)))
        y = torch.zeros_like(p)
        y[list(rows), t["labels"][list(cols)]] = 1
        focal += (-(ALPHA * y * (1 - p) ** GAMMA * torch.log(p)
                    + (1 - ALPHA) * (1 - y) * p ** GAMMA * torch.log(1 - p))).sum().item()
        for i, j in zip(rows, cols):
            l1 += (boxes[b, i] - t["boxes"][j]).abs().sum().item()
            giou += 1 - plain_giou(boxes[b, i].tolist(), t["boxes"][j].tolist())
    n = max(1, sum(len(t["labels"]) for t in targets))
    return indices, {"loss_ce": focal / n, "loss_bbox": l1 / n, "loss_giou": giou / n}


def test_matching_and_losses_equal_a_plain_torch_and_scipy_version():
    cfg = conditional_config(**{"model.dn_groups": 0})
    criterion = build_criterion(cfg)
    assert criterion.weight_dict["loss_ce"] == 2.0 and criterion.matcher.cost_class == 2.0
    g = torch.Generator().manual_seed(3)
    q, c = 7, cfg.model.num_classes
    logits = torch.randn(3, q, c, generator=g) * 2
    centres, sizes = torch.rand(3, q, 2, generator=g) * 0.6 + 0.2, torch.rand(3, q, 2, generator=g) * 0.3 + 0.1
    boxes = torch.cat([centres, sizes], -1)
    targets = [{"boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4], [0.5, 0.5, 0.6, 0.5]]),
                "labels": torch.tensor([1, 4, 1])},
               {"boxes": torch.tensor([[0.4, 0.5, 0.5, 0.5]]), "labels": torch.tensor([c - 1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    outputs = {"pred_logits": logits, "pred_boxes": boxes}
    indices, expected = plain_conditional_losses(logits, boxes, targets)
    got = criterion.matcher(outputs, targets)
    assert [(r.tolist(), k.tolist()) for r, k in got] == [(list(map(int, r)), list(map(int, k))) for r, k in indices]
    losses = criterion(outputs, targets)
    for name, value in expected.items():
        assert losses[name].item() == pytest.approx(value, rel=1e-5), name
    predicted = (logits.sigmoid() > 0.5).any(-1).sum(1).float()  # a query counts when a class is more likely than not
    error = (predicted - torch.tensor([3.0, 1, 0])).abs().mean()
    assert losses["cardinality_error"].item() == pytest.approx(error.item())


def test_denoising_composes_and_leaves_the_matching_queries_alone():
    cfg = conditional_config()
    assert cfg.model.dn_groups > 0
    torch.manual_seed(0)
    model = build_model(cfg.model).train()  # smoke: no dropout, so train-mode outputs are deterministic
    images, mask, targets = batch()
    out, plain = model(images, mask, targets=targets), model(images, mask)
    torch.testing.assert_close(out["pred_logits"], plain["pred_logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["pred_boxes"], plain["pred_boxes"], atol=1e-5, rtol=1e-5)
    assert out["dn_outputs"]["pred_logits"].shape[-1] == cfg.model.num_classes
    losses = build_criterion(cfg)(out, targets)
    assert {"loss_ce_dn", "loss_bbox_dn", "loss_giou_dn"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())


def test_a_few_smoke_steps_learn_and_the_pipeline_reads_the_sigmoid_outputs(tmp_path):
    cfg = conditional_config()
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    criterion = build_criterion(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    images, mask, targets = batch()
    losses = []
    for _ in range(8):
        loss = criterion.total(criterion(model(images, mask, targets=targets), targets))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.9 * losses[0], losses

    model.eval()
    with torch.no_grad():
        out = model(images, mask)
    q, c = cfg.model.num_queries, cfg.model.num_classes
    assert out["pred_logits"].shape == (2, q, c) and out["pred_boxes"].shape == (2, q, 4)
    assert len(out["aux_outputs"]) == cfg.model.dec_layers - 1
    results = PostProcess(top_k=3, sigmoid=True)(out, [(64, 64), (64, 40)])
    best = out["pred_logits"].sigmoid().amax(-1).sort(-1, descending=True).values[:, :3]
    assert all(torch.equal(r["scores"], s) for r, s in zip(results, best))  # one detection per query, its best class
    assert all((r["labels"] < c).all() for r in results)

    save_best({"model": model.state_dict(), "config": cfg.to_dict()}, tmp_path)  # a run checkpoint loads again
    again, again_cfg, _ = load_trained(tmp_path / "best.pt")
    assert again_cfg == cfg
    with torch.no_grad():
        assert torch.equal(again(images, mask)["pred_boxes"], out["pred_boxes"])


@pytest.mark.parametrize("changes", [{"model.class_head": "sigmoid"}, {"train.class_loss": "sigmoid_focal"}])
def test_a_sigmoid_head_and_its_loss_go_together(changes):
    with pytest.raises(ConfigError, match="set both or neither"):
        get_profile("smoke").replace(**changes)


def measured(**extra):
    """A results file of ``bench conditional`` as it would be written, with made-up numbers."""
    curves = {"vanilla": [[[100, 0.10], [200, 0.30]], [[100, 0.12], [200, 0.28]]],
              "Conditional": [[[100, 0.30], [200, 0.40]], [[100, 0.20], [200, 0.35]]],
              "+DN": [[[100, 0.05], [200, 0.20]], [[100, 0.06], [200, 0.29]]]}
    seconds = {"vanilla": 1.0, "Conditional": 1.2, "+DN": 1.5}
    return {"profile": "quick", "seeds": [0, 1], "machine": {"cpu": "a CPU"},
            "rows": [{"name": n, "curves": c, "s_per_step": seconds[n]} for n, c in curves.items()], **extra}


def test_the_table_and_the_curves_are_computed_from_the_file():
    from detrlib.bench.conditional import evaluations_table, plot_curves, table

    rows = {r["configuration"]: r for r in table(measured())}
    assert rows["Conditional"]["steps to vanilla's final AP@0.5"] == "100 / 200"  # 0.30 by step 100, 0.28 by 200
    assert rows["vanilla"]["steps to vanilla's final AP@0.5"] == "200 / 200"
    assert rows["+DN"]["steps to vanilla's final AP@0.5"] == "not reached / 200"
    assert rows["Conditional"]["mean AP@0.5"] == pytest.approx(0.375) and rows["Conditional"]["AP@0.5 seed 1"] == 0.35
    assert rows["Conditional"]["x vanilla"] == pytest.approx(1.2) and rows["vanilla"]["x vanilla"] == 1
    evaluations = evaluations_table(measured())
    assert len(evaluations) == 6 and evaluations[1] == {"configuration": "vanilla", "seed": 1,
                                                         "step 100": 0.12, "step 200": 0.28}
    ax = plot_curves(measured())
    assert len(ax.lines) == 7 and ax.lines[-1].get_ydata()[0] == pytest.approx(0.29)  # 3 x 2 runs, vanilla's mean


@pytest.mark.slow
def test_the_measurement_trains_every_configuration_and_writes_its_file(tmp_path, monkeypatch):
    import argparse
    import json

    from detrlib.bench import load_all

    monkeypatch.setenv("DETRLIB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DETRLIB_RUNS", str(tmp_path / "runs"))
    entry, parser = load_all()["conditional"], argparse.ArgumentParser()
    entry.add_arguments(parser)
    out = tmp_path / "conditional.json"
    rows = entry.run(parser.parse_args(["--profile", "smoke", "--seeds", "0", "--repeats", "1", "--out", str(out)]))
    assert [r["configuration"] for r in rows] == ["vanilla", "+DN", "Conditional", "Conditional + DN"]
    results = json.loads(out.read_text())
    assert results["budget_steps"] == get_profile("smoke").train.max_steps and results["machine"]["cpu"]
    assert all(r["curves"][0][-1][0] == results["budget_steps"] and r["s_per_step"] > 0 for r in results["rows"])
    with pytest.raises(FileExistsError, match="already exists"):
        entry.run(parser.parse_args(["--profile", "smoke", "--seeds", "0", "--out", str(out)]))
