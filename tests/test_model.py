"""detrlib's DETR is the official DETR: same state_dict, same outputs, plus its own conveniences.

The reference below is written the way facebookresearch/detr writes it (sequence-first
``nn.MultiheadAttention`` post-norm layers, ``IntermediateLayerGetter`` with its own frozen
BatchNorm, the sine encoding with normalize=True and scale 2*pi), so loading one state_dict into
both and comparing outputs checks that detrlib computes the same function.
"""
import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter

from detrlib.config import ConfigError, ModelConfig, get_profile
from detrlib.model import Backbone, PostProcess, build_model, count_parameters, record_attention

DATA = Path(__file__).parent / "data"
SMALL = ModelConfig(backbone="resnet18", hidden_dim=64, nheads=4, enc_layers=2, dec_layers=3,
                    dim_feedforward=128, dropout=0.0, num_queries=7, num_classes=5)


# ---------------------------------------------------------------- the reference, official style
class RefFrozenBatchNorm2d(nn.Module):
    def __init__(self, n):
        super().__init__()
        for name, init in (("weight", torch.ones), ("bias", torch.zeros), ("running_mean", torch.zeros),
                           ("running_var", torch.ones)):
            self.register_buffer(name, init(n))

    def forward(self, x):
        scale = self.weight.reshape(1, -1, 1, 1) * (self.running_var.reshape(1, -1, 1, 1) + 1e-5).rsqrt()
        bias = self.bias.reshape(1, -1, 1, 1) - self.running_mean.reshape(1, -1, 1, 1) * scale
        return x * scale + bias


class RefBackbone(nn.Module):
    def __init__(self, name):
        super().__init__()
        resnet = getattr(torchvision.models, name)(weights=None, norm_layer=RefFrozenBatchNorm2d)
        self.body = IntermediateLayerGetter(resnet, return_layers={"layer4": "0"})

    def forward(self, x, m):
        x = self.body(x)["0"]
        return x, F.interpolate(m[None].float(), size=x.shape[-2:]).to(torch.bool)[0]


class RefSine(nn.Module):
    def __init__(self, num_pos_feats):
        super().__init__()
        self.num_pos_feats, self.temperature, self.scale = num_pos_feats, 10000, 2 * math.pi

    def forward(self, x, mask):
        not_mask = ~mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        y_embed = y_embed / (y_embed[:, -1:, :] + 1e-6) * self.scale
        x_embed = x_embed / (x_embed[:, :, -1:] + 1e-6) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


class RefLearned(nn.Module):
    def __init__(self, num_pos_feats):
        super().__init__()
        self.row_embed = nn.Embedding(50, num_pos_feats)
        self.col_embed = nn.Embedding(50, num_pos_feats)

    def forward(self, x, mask):
        h, w = x.shape[-2:]
        x_emb, y_emb = self.col_embed(torch.arange(w)), self.row_embed(torch.arange(h))
        pos = torch.cat([x_emb.unsqueeze(0).repeat(h, 1, 1), y_emb.unsqueeze(1).repeat(1, w, 1)], dim=-1)
        return pos.permute(2, 0, 1).unsqueeze(0).repeat(x.shape[0], 1, 1, 1)


class RefEncoderLayer(nn.Module):
    def __init__(self, d, nhead, ff):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, nhead)
        self.linear1, self.linear2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, src, mask, pos):
        q = k = src + pos
        src = self.norm1(src + self.self_attn(q, k, value=src, key_padding_mask=mask)[0])
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class RefDecoderLayer(nn.Module):
    def __init__(self, d, nhead, ff):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, nhead)
        self.multihead_attn = nn.MultiheadAttention(d, nhead)
        self.linear1, self.linear2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, tgt, memory, mask, pos, query_pos):
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.self_attn(q, k, value=tgt)[0])
        tgt2 = self.multihead_attn(query=tgt + query_pos, key=memory + pos, value=memory, key_padding_mask=mask)[0]
        tgt = self.norm2(tgt + tgt2)
        return self.norm3(tgt + self.linear2(F.relu(self.linear1(tgt))))


class RefTransformer(nn.Module):
    def __init__(self, d, nhead, n_enc, n_dec, ff):
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(RefEncoderLayer(d, nhead, ff) for _ in range(n_enc))
        self.decoder = nn.Module()
        self.decoder.layers = nn.ModuleList(RefDecoderLayer(d, nhead, ff) for _ in range(n_dec))
        self.decoder.norm = nn.LayerNorm(d)

    def forward(self, src, mask, query_embed, pos_embed):
        bs = src.shape[0]
        src = src.flatten(2).permute(2, 0, 1)
        pos_embed = pos_embed.flatten(2).permute(2, 0, 1)
        query_embed = query_embed.unsqueeze(1).repeat(1, bs, 1)
        mask = mask.flatten(1)
        memory = src
        for layer in self.encoder.layers:
            memory = layer(memory, mask, pos_embed)
        out, intermediate = torch.zeros_like(query_embed), []
        for layer in self.decoder.layers:
            out = layer(out, memory, mask, pos_embed, query_embed)
            intermediate.append(self.decoder.norm(out))
        return torch.stack(intermediate).transpose(1, 2)


class RefDETR(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg.hidden_dim
        self.transformer = RefTransformer(d, cfg.nheads, cfg.enc_layers, cfg.dec_layers, cfg.dim_feedforward)
        self.class_embed = nn.Linear(d, cfg.num_classes + 1)
        self.bbox_embed = nn.Module()
        self.bbox_embed.layers = nn.ModuleList([nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, 4)])
        self.query_embed = nn.Embedding(cfg.num_queries, d)
        self.input_proj = nn.Conv2d(512 if cfg.backbone in ("resnet18", "resnet34") else 2048, d, 1)
        pos = RefSine(d // 2) if cfg.position_embedding == "sine" else RefLearned(d // 2)
        self.backbone = nn.Sequential(RefBackbone(cfg.backbone), pos)

    def forward(self, images, mask):
        src, mask = self.backbone[0](images, mask)
        pos = self.backbone[1](src, mask)
        hs = self.transformer(self.input_proj(src), mask, self.query_embed.weight, pos)
        box = hs
        for i, layer in enumerate(self.bbox_embed.layers):
            box = F.relu(layer(box)) if i < 2 else layer(box)
        return self.class_embed(hs), box.sigmoid()


def padded_batch(seed=0):
    """Two images of different sizes, zero-padded into one batch, True on the padding."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(2, 3, 96, 128)
    mask = torch.ones(2, 96, 128, dtype=torch.bool)
    for i, (h, w) in enumerate([(96, 128), (70, 90)]):
        images[i, :, :h, :w] = torch.randn(3, h, w, generator=g)
        mask[i, :h, :w] = False
    return images, mask


def randomize_buffers(model):
    """Give the frozen BatchNorm statistics non-trivial values, so the comparison sees them."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith(("running_var", "weight")):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
            elif name.endswith(("running_mean", "bias")):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))


# ---------------------------------------------------------------- same function as the official DETR
@pytest.mark.parametrize("position_embedding", ["sine", "learned"])
def test_same_outputs_as_the_official_code_on_a_padded_batch(position_embedding):
    cfg = ModelConfig(**{**SMALL.__dict__, "position_embedding": position_embedding})
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    randomize_buffers(model)
    ref = RefDETR(cfg).eval()
    ref.load_state_dict(model.state_dict(), strict=True)  # identical names and shapes

    images, mask = padded_batch()
    with torch.no_grad():
        out = model(images, mask)
        ref_logits, ref_boxes = ref(images, mask)
    assert out["pred_logits"].shape == (2, cfg.num_queries, cfg.num_classes + 1)
    torch.testing.assert_close(out["pred_logits"], ref_logits[-1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["pred_boxes"], ref_boxes[-1], atol=1e-5, rtol=1e-4)
    assert len(out["aux_outputs"]) == cfg.dec_layers - 1
    for i, aux in enumerate(out["aux_outputs"]):
        torch.testing.assert_close(aux["pred_logits"], ref_logits[i], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(aux["pred_boxes"], ref_boxes[i], atol=1e-5, rtol=1e-4)


def test_same_gradients_as_the_official_code():
    torch.manual_seed(0)
    model = build_model(SMALL).train()
    ref = RefDETR(SMALL).train()
    ref.load_state_dict(model.state_dict(), strict=True)
    images, mask = padded_batch(seed=3)
    out = model(images, mask)
    (out["pred_logits"].logsumexp(-1).mean() + out["pred_boxes"].square().mean()).backward()
    logits, boxes = ref(images, mask)
    (logits[-1].logsumexp(-1).mean() + boxes[-1].square().mean()).backward()
    ref_params = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        if p.requires_grad:  # float32 rounding differs between the kernels: compare relative norms
            error = (p.grad - ref_params[name].grad).norm() / ref_params[name].grad.norm().clamp(min=1e-8)
            assert error < 1e-3, f"{name}: relative gradient error {error:.2e}"


def test_recorded_attention_equals_multihead_attention_weights():
    torch.manual_seed(0)
    model = build_model(SMALL).eval()
    ref = RefDETR(SMALL).eval()
    ref.load_state_dict(model.state_dict(), strict=True)
    images, mask = padded_batch()
    captured = {}
    layer = ref.transformer.decoder.layers[-1].multihead_attn
    handle = layer.register_forward_hook(lambda m, i, o: captured.update(w=o[1]))
    with torch.no_grad(), record_attention(model) as maps:
        plain = model(images, mask)["pred_logits"]
        ref(images, mask)
    handle.remove()
    weights = maps[f"transformer.decoder.layers.{SMALL.dec_layers - 1}.multihead_attn"]
    assert weights.shape == (2, SMALL.nheads, SMALL.num_queries, 3 * 4)
    torch.testing.assert_close(weights.mean(1), captured["w"], atol=1e-5, rtol=1e-4)
    padded_keys = F.interpolate(mask[None].float(), size=(3, 4)).bool()[0].flatten(1)
    assert weights[1][..., padded_keys[1]].abs().max() == 0
    assert not any(m.record for m in model.modules() if hasattr(m, "record"))
    with torch.no_grad():  # recording changes no output
        torch.testing.assert_close(model(images, mask)["pred_logits"], plain)


# ---------------------------------------------------------------- the official checkpoint's layout
def test_r50_state_dict_matches_the_official_checkpoint():
    reference = json.loads((DATA / "detr_r50_coco_state_dict.json").read_text())
    model = build_model(ModelConfig(backbone="resnet50", num_classes=91))
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(shapes) == list(reference["keys"])
    assert shapes == reference["keys"]
    total = count_parameters(model)[-1]
    assert (total["total"], total["trainable"]) == (reference["total_params"], reference["trainable_params"])


def test_parameter_counts_per_module_add_up():
    model = build_model(SMALL)
    rows = count_parameters(model)
    by_name = {r["module"]: r for r in rows}
    assert by_name["total"]["total"] == sum(p.numel() for p in model.parameters())
    assert by_name["total"]["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert by_name["class_embed"]["total"] == 64 * 6 + 6
    assert by_name["backbone.0"]["trainable"] < by_name["backbone.0"]["total"]  # stem and layer1 frozen


# ---------------------------------------------------------------- detrlib's additions
@pytest.mark.parametrize("stages, stride, channels", [(4, 32, 512), (3, 16, 256), (2, 8, 128)])
def test_truncated_backbone_stride_and_channels(stages, stride, channels):
    model = build_model(ModelConfig(**{**SMALL.__dict__, "backbone_stages": stages}))
    assert model.backbone.num_channels == channels
    images, mask = padded_batch()
    tokens, pos, padding, (h, w) = model.image_tokens(images, mask)
    assert (h, w) == (96 // stride, 128 // stride)
    assert tokens.shape == (2, h * w, 64) and pos.shape == (2, h * w, 64) and padding.shape == (2, h * w)
    assert not any(f"layer{stages + 1}" in n for n, _ in model.named_parameters())


def test_backbone_returns_several_stages_and_detr_reads_the_last():
    backbone = Backbone("resnet18", stages=3, frozen_bn=False, return_stages=3).eval()
    images, mask = padded_batch()
    maps = backbone.feature_maps(images, mask)
    assert [tuple(f.shape[1:]) for f, _ in maps] == [(64, 24, 32), (128, 12, 16), (256, 6, 8)]  # strides 4, 8, 16
    assert [tuple(m.shape) for _, m in maps] == [(2, 24, 32), (2, 12, 16), (2, 6, 8)]
    assert backbone.channels == [64, 128, 256] and backbone.num_channels == 256
    single = Backbone("resnet18", stages=3, frozen_bn=False).eval()
    single.load_state_dict(backbone.state_dict())  # the same parameters, whatever the stages returned
    features, feature_mask = single(images, mask)
    assert torch.equal(features, maps[-1][0]) and torch.equal(feature_mask, maps[-1][1])


def test_quick_profile_model_trains_every_backbone_parameter_with_batchnorm():
    model = build_model(get_profile("quick").model).train()
    assert all(p.requires_grad for p in model.parameters())
    norms = [m for m in model.backbone.modules() if "BatchNorm" in type(m).__name__]
    assert norms and all(type(m) is nn.BatchNorm2d for m in norms)
    before = model.backbone[0].body.bn1.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert not torch.equal(before, model.backbone[0].body.bn1.running_mean)


def test_frozen_stages_keep_their_batchnorm_statistics():
    cfg = ModelConfig(**{**SMALL.__dict__, "frozen_bn": False, "frozen_stages": 1})
    model = build_model(cfg).train()
    body = model.backbone[0].body
    assert not body.conv1.weight.requires_grad and not body.layer1[0].conv1.weight.requires_grad
    assert body.layer2[0].conv1.weight.requires_grad
    stem, layer2 = body.bn1.running_mean.clone(), body.layer2[0].bn1.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(stem, body.bn1.running_mean)
    assert not torch.equal(layer2, body.layer2[0].bn1.running_mean)
    assert body.layer2[0].bn1.training and not body.layer1[0].bn1.training


def test_no_mask_equals_an_all_false_mask_and_aux_outputs_are_optional():
    torch.manual_seed(0)
    model = build_model(ModelConfig(**{**SMALL.__dict__, "aux_loss": False})).eval()
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        a = model(images)
        b = model(images, torch.zeros(2, 64, 96, dtype=torch.bool))
    assert set(a) == {"pred_logits", "pred_boxes"}
    torch.testing.assert_close(a["pred_logits"], b["pred_logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a["pred_boxes"], b["pred_boxes"], atol=1e-6, rtol=1e-5)
    assert ((a["pred_boxes"] >= 0) & (a["pred_boxes"] <= 1)).all()


def test_extra_queries_hidden_by_tgt_mask_leave_the_object_queries_unchanged():
    """What denoising (chapter 5) relies on: prepend queries, block the real ones from seeing them."""
    torch.manual_seed(0)
    model = build_model(SMALL).eval()
    images, mask = padded_batch()
    n_extra, q = 4, SMALL.num_queries
    with torch.no_grad():
        tokens, pos, padding, _ = model.image_tokens(images, mask)
        content, queries = model.query_embed(2)
        plain, _ = model.transformer(tokens, pos, padding, queries, content)
        extra = torch.randn(2, n_extra, 64)
        query_pos = torch.cat([torch.randn(2, n_extra, 64), queries], dim=1)
        tgt = torch.cat([extra, content], dim=1)
        tgt_mask = torch.zeros(n_extra + q, n_extra + q, dtype=torch.bool)
        tgt_mask[n_extra:, :n_extra] = True
        hs, _ = model.transformer(tokens, pos, padding, query_pos, tgt=tgt, tgt_mask=tgt_mask)
        out = model.predict(hs[:, :, n_extra:])
    torch.testing.assert_close(hs[:, :, n_extra:], plain, atol=1e-5, rtol=1e-5)
    assert out["pred_logits"].shape == (2, q, SMALL.num_classes + 1)


def test_compile_keeps_the_state_dict_names():
    model = build_model(SMALL, compile=True)
    assert list(model.state_dict()) == list(build_model(SMALL).state_dict())


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("images, mask, error, match", [
    ([torch.zeros(3, 64, 64), torch.zeros(3, 48, 80)], None, TypeError, r"list of 2 images.*\(48, 80\).*mask"),
    (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), None, TypeError, "float.*uint8"),
    (torch.zeros(1, 1, 64, 64), None, ValueError, r"\[B, 3, H, W\], got \(1, 1, 64, 64\)"),
    (torch.zeros(2, 3, 64, 64), torch.zeros(2, 64, 60, dtype=torch.bool), ValueError, r"mask shape \(2, 64, 60\)"),
    (torch.zeros(2, 3, 64, 64), torch.zeros(2, 64, 64), TypeError, "mask must be bool"),
])
def test_bad_input_is_a_clear_error(images, mask, error, match):
    model = build_model(SMALL)
    with pytest.raises(error, match=match):
        model(images, mask)


@pytest.mark.parametrize("changes, match", [
    ({"dilation": True}, "dilation.*resnet50"),
    ({"nheads": 5}, r"model.hidden_dim \(64\) must be divisible by model.nheads \(5\)"),
])
def test_bad_config_is_a_clear_error(changes, match):
    with pytest.raises(ValueError, match=match):  # when the config is made, before any model
        ModelConfig(**{**SMALL.__dict__, **changes})


def test_the_registry_is_the_one_list_of_parts_and_refuses_a_taken_name(monkeypatch):
    from detrlib.config import CHOICES, settle
    from detrlib.model.backbone import RESNETS, Backbone
    from detrlib.model.registry import PARTS, register

    assert tuple(PARTS["backbone"]) == tuple(RESNETS) and not any(k.startswith("model.") and k.split(".")[1] in
                                                                   PARTS for k in CHOICES)
    with pytest.raises(ConfigError, match="model.backbone must be one of resnet101, resnet18, resnet34, resnet50, "
                                          "got 'resnet999'"):
        settle(named="smoke", sets=["model.backbone=resnet999"])
    monkeypatch.setitem(PARTS, "backbone", dict(PARTS["backbone"]))
    register("backbone", "resnet999")(Backbone)  # a registered name is a valid setting at once
    assert settle(named="smoke", sets=["model.backbone=resnet999"]).model.backbone == "resnet999"

    class Other(Backbone):
        pass

    with pytest.raises(ValueError, match="backbone 'resnet50' is already detrlib.model.backbone.Backbone: register "
                                         "test_model.*Other under another name"):
        register("backbone", "resnet50")(Other)
    assert register("backbone", "resnet50")(Backbone) is Backbone and PARTS["backbone"]["resnet50"] is Backbone
    with pytest.raises(TypeError, match="a part is built from the ModelConfig by its from_config"):
        register("backbone", "plain")(torch.nn.Identity)


def test_every_part_is_built_from_the_model_config_alone(monkeypatch):
    """One contract for every kind: ``from_config(cfg)``; a layer kind's is called once per layer."""
    from detrlib.model.registry import PARTS, register
    from detrlib.model.transformer import DecoderLayer, EncoderLayer

    seen = []

    class Counted(EncoderLayer):
        @classmethod
        def from_config(cls, cfg):
            seen.append(cfg)
            return super().from_config(cfg)

    monkeypatch.setitem(PARTS, "encoder_layer_type", dict(PARTS["encoder_layer_type"]))
    register("encoder_layer_type", "counted")(Counted)
    cfg = ModelConfig(**{**SMALL.__dict__, "encoder_layer_type": "counted"})
    model = build_model(cfg)
    assert seen == [cfg] * cfg.enc_layers
    assert [type(layer) for layer in model.transformer.encoder.layers] == [Counted] * cfg.enc_layers
    assert all(type(layer) is DecoderLayer for layer in model.transformer.decoder.layers)
    assert model.query_embed.weight.shape == (cfg.num_queries, cfg.hidden_dim)
    assert model.backbone[1].num_pos_feats == cfg.hidden_dim // 2


@pytest.mark.parametrize("changes, match", [
    ({"backbone": "vgg16"}, "model.backbone must be one of resnet101, resnet18, resnet34, resnet50, got 'vgg16'"),
    ({"position_embedding": "rope"}, "model.position_embedding must be one of learned, sine, got 'rope'"),
    ({"decoder_layer_type": "deformable"}, "model.decoder_layer_type must be one of conditional, detr, got 'deform"),
    ({"query_type": "anchors"}, "model.query_type must be one of learned, got 'anchors'"),
])
def test_a_part_nobody_registered_is_a_clear_error(changes, match):
    with pytest.raises(ValueError, match=match):  # when the model is built: a variant registers its part first
        build_model(ModelConfig(**{**SMALL.__dict__, **changes}))


def test_learned_positions_refuse_too_large_feature_maps():
    model = build_model(ModelConfig(**{**SMALL.__dict__, "position_embedding": "learned", "backbone_stages": 2}))
    with pytest.raises(ValueError, match="larger than the learned position embedding"):
        model(torch.zeros(1, 3, 64, 8 * 51))


# ---------------------------------------------------------------- postprocess
def test_postprocess_drops_no_object_scales_boxes_sorts_and_filters():
    logits = torch.tensor([[[0.0, 0.0, 5.0], [3.0, 0.0, 0.0], [0.0, 2.0, 0.0]]])  # no-object is index 2
    boxes = torch.tensor([[[0.5, 0.5, 1.0, 1.0], [0.25, 0.5, 0.5, 0.2], [0.5, 0.5, 0.2, 0.2]]])
    outputs = {"pred_logits": logits, "pred_boxes": boxes}
    (res,) = PostProcess()(outputs, [(100, 200)])  # height 100, width 200
    probs = logits.softmax(-1)[0]
    assert res["labels"].tolist() == [0, 1, 0]
    torch.testing.assert_close(res["scores"], torch.stack([probs[1, 0], probs[2, 1], probs[0, 0]]))
    torch.testing.assert_close(res["boxes"][0], torch.tensor([0.0, 40.0, 100.0, 60.0]))
    (top,) = PostProcess(top_k=2)(outputs, torch.tensor([[100, 200]]))
    assert top["labels"].tolist() == [0, 1]
    (kept,) = PostProcess(threshold=0.5)(outputs, [(100, 200)])
    assert len(kept["scores"]) == 2 and (kept["scores"] >= 0.5).all()
    with pytest.raises(ValueError, match="target_sizes must be"):
        PostProcess()(outputs, [100, 200])


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo planted",))


def test_pretrained_backbone_loads_imagenet_weights_into_frozen_batchnorm_as_data_only(tmp_path, monkeypatch):
    """Offline: a torchvision ResNet's own state_dict stands in the hub cache for the download."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    donor = torchvision.models.resnet18()
    with torch.no_grad():
        donor.bn1.running_var.fill_(2.0)
        donor.conv1.weight.fill_(0.5)
    torch.save(donor.state_dict(), cached)
    model = build_model(ModelConfig(**{**SMALL.__dict__, "pretrained_backbone": True}))
    body = model.backbone[0].body
    assert torch.equal(body.bn1.running_var, donor.bn1.running_var)
    assert torch.equal(body.conv1.weight, donor.conv1.weight)

    torch.save({**donor.state_dict(), "hook": RunsCode()}, cached)  # planted: unpickling it would run a command
    with pytest.raises(ValueError, match=r"resnet18-f37072fd.pth cannot be read as resnet18's ImageNet weights: .* "
                                         r"could run code and detrlib refuses; delete it"):
        build_model(ModelConfig(**{**SMALL.__dict__, "pretrained_backbone": True}))
