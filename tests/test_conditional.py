"""Conditional DETR's decoder layer, a registered part: one field value builds it, the rest of the
pipeline (matcher, loss, PostProcess) takes its outputs as DETR's, and a few steps on one batch learn."""
import math

import torch

from detrlib.config import get_profile
from detrlib.criterion import build_criterion
from detrlib.matcher import HungarianMatcher
from detrlib.model import PostProcess, build_model, record_attention
from detrlib.model.conditional import ConditionalAttention, ConditionalDecoderLayer
from detrlib.model.transformer import DecoderLayer


def conditional_config():
    return get_profile("smoke").replace(**{"model.decoder_layer_type": "conditional"})


def batch():
    g = torch.Generator().manual_seed(0)
    images, mask = torch.randn(2, 3, 64, 64, generator=g), torch.zeros(2, 64, 64, dtype=torch.bool)
    mask[1, :, 40:] = True
    targets = [{"boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]]), "labels": torch.tensor([1, 4])},
               {"boxes": torch.tensor([[0.4, 0.5, 0.5, 0.5]]), "labels": torch.tensor([2])}]
    return images, mask, targets


def test_the_field_value_swaps_only_the_decoder_layers():
    cfg = conditional_config()
    model, plain = build_model(cfg.model), build_model(get_profile("smoke").model)
    layers = model.transformer.decoder.layers
    assert len(layers) == cfg.model.dec_layers and all(type(m) is ConditionalDecoderLayer for m in layers)
    assert all(type(m) is DecoderLayer for m in plain.transformer.decoder.layers)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    plain_shapes = {k: v.shape for k, v in plain.state_dict().items()}
    assert all(shapes[k] == s for k, s in plain_shapes.items())  # DETR's tensors, plus the variant's own
    assert {k.split(".", 4)[-1] for k in set(shapes) - set(plain_shapes)} == {
        f"{m}.{p}" for m in ("multihead_attn.spatial_query", "multihead_attn.spatial_key", "reference_point.layers.0",
                             "reference_point.layers.1", "query_scale.layers.0", "query_scale.layers.1")
        for p in ("weight", "bias")}


def test_a_score_is_content_with_content_plus_spatial_query_with_key_position():
    torch.manual_seed(0)
    model = build_model(conditional_config().model).eval()
    images, mask, _ = batch()
    name = "transformer.decoder.layers.1.multihead_attn"
    attn = model.get_submodule(name)
    seen = {}
    handle = attn.register_forward_hook(lambda m, args, out: seen.update(args=args, out=out[0]))
    with torch.no_grad(), record_attention(model) as maps:
        model(images, mask)
    handle.remove()
    query, key, value, spatial_query, key_pos, padding = seen["args"]
    d, h = attn.d_model, attn.nheads
    w, b = attn.in_proj_weight.detach(), attn.in_proj_bias.detach()

    def heads(x):
        return x.reshape(*x.shape[:2], h, d // h).transpose(1, 2)

    with torch.no_grad():
        content = heads(query @ w[:d].T + b[:d]) @ heads(key @ w[d:2 * d].T + b[d:2 * d]).transpose(-1, -2)
        spatial = heads(attn.spatial_query(spatial_query)) @ heads(attn.spatial_key(key_pos)).transpose(-1, -2)
        scores = (content + spatial) / math.sqrt(2 * d // h)  # a head's query and key are 2 d / h wide
        weights = scores.masked_fill(padding[:, None, None, :], float("-inf")).softmax(-1)
        out = attn.out_proj((weights @ heads(value @ w[2 * d:].T + b[2 * d:])).transpose(1, 2).flatten(2))
    assert isinstance(attn, ConditionalAttention) and padding[1].any()
    torch.testing.assert_close(maps[name], weights)
    torch.testing.assert_close(seen["out"], out, atol=1e-5, rtol=1e-4)
    assert maps[name][1][..., padding[1]].abs().max() == 0


def test_a_few_smoke_steps_learn_and_the_outputs_are_detrs():
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
    assert out["pred_logits"].shape == (2, q, c + 1) and out["pred_boxes"].shape == (2, q, 4)
    assert len(out["aux_outputs"]) == cfg.model.dec_layers - 1
    assert ((out["pred_boxes"] > 0) & (out["pred_boxes"] < 1)).all()
    assert [len(rows) for rows, _ in HungarianMatcher()(out, targets)] == [2, 1]
    results = PostProcess(top_k=3)(out, [(64, 64), (64, 40)])
    assert [len(r["scores"]) for r in results] == [3, 3]
    assert all((r["boxes"][:, 2:] >= r["boxes"][:, :2]).all() and (r["labels"] < c).all() for r in results)
