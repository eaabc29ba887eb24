"""DETR: backbone -> transformer -> one class and one box per object query.

``DETR.forward`` is three steps, each a method a variant can reuse (:meth:`DETR.denoise`, chapter 5, decodes extra
queries with the same three): :meth:`image_tokens` (CNN features, projected to ``hidden_dim`` and flattened to tokens,
with their positions and padding mask); the transformer, which encodes the tokens and decodes the object queries
(:class:`LearnedQueries`); :meth:`predict`, a linear class head (``num_classes + 1`` logits, no-object last) and a
3-layer MLP box head (sigmoid ``cx, cy, w, h`` in [0, 1] of the unpadded image) on every decoder layer's output.

Two settings serve variants: ``class_head="sigmoid"`` gives ``num_classes`` logits, one sigmoid each and no no-object
class (trained with the sigmoid focal loss), and a decoder with reference points (Conditional DETR's,
:mod:`detrlib.model.conditional`) has each box predicted relative to its query's point."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert

from detrlib.model.backbone import Joiner
from detrlib.model.denoising import Denoiser
from detrlib.model.registry import build, part, register
from detrlib.model.transformer import Decoder, Transformer
from detrlib.targets import check_targets

if TYPE_CHECKING:
    from detrlib.config import ModelConfig


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip(dims, dims[1:] + [output_dim]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


@register("query_type", "learned")
class LearnedQueries(nn.Module):
    """DETR's object queries: zero content and a learned position each (``weight [Q, d]``, the official
    checkpoint's ``query_embed.weight``). ``(batch_size) -> (content, position)``, both ``[B, Q, d]``."""

    def __init__(self, num_queries: int, hidden_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_queries, hidden_dim))  # as nn.Embedding initialises it

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.num_queries, cfg.hidden_dim)

    def forward(self, batch_size: int):
        position = self.weight.expand(batch_size, -1, -1)
        return torch.zeros_like(position), position


class DETR(nn.Module):
    """``model(images, mask)`` -> ``{"pred_logits": [B, Q, C + 1], "pred_boxes": [B, Q, 4], "aux_outputs": [...]}``
    for ``images [B, 3, H, W]`` float and ``mask [B, H, W]`` bool (True = padding) or None; the logits are
    ``[B, Q, C]`` with ``class_head="sigmoid"``.

    With a ``denoiser`` (:class:`~detrlib.model.denoising.Denoiser`), training calls
    ``model(images, mask, targets=targets)`` add denoising queries; inference is unchanged. ``queries()`` makes the
    object queries (:class:`LearnedQueries` by default)."""

    def __init__(self, backbone: Joiner, transformer: Transformer, num_classes: int, num_queries: int,
                 aux_loss: bool = True, denoiser: Denoiser | None = None, queries=None, class_head: str = "softmax"):
        super().__init__()
        if class_head not in ("softmax", "sigmoid"):
            raise ValueError(f"class_head must be softmax or sigmoid, got {class_head!r}")
        self.num_classes, self.num_queries, self.aux_loss = num_classes, num_queries, aux_loss
        self.class_head = class_head
        self.transformer = transformer
        hidden_dim = transformer.d_model
        self.class_embed = nn.Linear(hidden_dim, num_classes + (class_head == "softmax"))
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        self.query_embed = queries() if queries else LearnedQueries(num_queries, hidden_dim)
        self.input_proj = nn.Conv2d(backbone.num_channels, hidden_dim, kernel_size=1)
        self.backbone = backbone
        self.denoiser = denoiser
        if class_head == "sigmoid":  # every class starts at probability 0.01, the focal loss's prior
            nn.init.constant_(self.class_embed.bias, -math.log(99))
        if transformer.decoder.reference_head is not None:  # a box starts centred on its reference point
            nn.init.zeros_(self.bbox_embed.layers[-1].weight)
            nn.init.zeros_(self.bbox_embed.layers[-1].bias)

    def image_tokens(self, images: torch.Tensor, mask: torch.Tensor | None = None):
        """``(tokens [B, hw, d], pos [B or 1, hw, d], padding [B, hw] | None, (h, w))``."""
        check_inputs(images, mask)
        features, mask, pos = self.backbone(images, mask)
        src = self.input_proj(features)
        h, w = src.shape[-2:]
        tokens = src.flatten(2).transpose(1, 2)
        pos = pos.flatten(2).transpose(1, 2)
        return tokens, pos, (mask.flatten(1) if mask is not None else None), (h, w)

    def predict(self, hs: torch.Tensor, reference: torch.Tensor | None = None) -> dict:
        """Heads on every decoder layer's output ``hs [layers, B, Q, d]``; the last layer is the answer.
        ``reference`` (:meth:`boxes`): the decoder's reference points, when it has them."""
        return self.outputs(self.class_embed(hs), self.boxes(hs, reference))

    def boxes(self, hs: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """The box head: ``sigmoid(MLP(hs))``, or with ``reference [B, Q, 2]`` (Conditional DETR's points, x and y
        in [0, 1]) ``sigmoid(MLP(hs) + [logit(reference), 0, 0])``: each box centre relative to its point."""
        if reference is None:
            return self.bbox_embed(hs).sigmoid()
        offset = F.pad(torch.logit(reference.float(), eps=1e-5), (0, 2))  # fp32: 1 - 1e-5 is 1 in bf16
        return (self.bbox_embed(hs) + offset).sigmoid()

    def outputs(self, logits: torch.Tensor, boxes: torch.Tensor) -> dict:
        """The heads' ``[layers, B, Q, ...]`` results as DETR's outputs: the last layer's, and the
        earlier layers' as ``aux_outputs``."""
        out = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.aux_loss:
            out["aux_outputs"] = [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])]
        return out

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None,
                targets: list[dict] | None = None) -> dict:
        """``targets`` matter only to a model with a denoiser, in training (see :meth:`denoise`)."""
        tokens, pos, padding, _ = self.image_tokens(images, mask)
        if self.denoiser is not None and self.training and targets is not None:
            return self.denoise(tokens, pos, padding, targets)
        content, query_pos = self.query_embed(len(tokens))
        hs, _ = self.transformer(tokens, pos, padding, query_pos, content)
        return self.predict(hs, self.transformer.decoder.reference_points(query_pos))

    def denoise(self, tokens, pos, padding, targets: list[dict]) -> dict:
        """Decode the denoising queries made from ``targets`` in front of the object queries (chapter 5).

        The object queries' predictions come out as usual; the denoising queries', in the same format, as
        ``"dn_outputs"`` (absent when the batch has no object), with ``"dn_meta"`` saying which object each came
        from. The attention mask keeps the object queries blind to the denoising ones: their outputs do not depend on
        them."""
        check_targets(targets, len(tokens), self.num_classes)
        dn = self.denoiser(targets, self.num_queries)
        n = dn.content.shape[1]
        content, query_pos = self.query_embed(len(tokens))
        query_pos = torch.cat([dn.pos, query_pos], 1)
        hs, _ = self.transformer(tokens, pos, padding, query_pos, torch.cat([dn.content, content], 1), dn.attn_mask)
        # the heads run once on all the queries; their results are split after
        logits, boxes = self.class_embed(hs), self.boxes(hs, self.transformer.decoder.reference_points(query_pos))
        out = self.outputs(logits[:, :, n:], boxes[:, :, n:])
        if n:
            out["dn_outputs"] = self.outputs(logits[:, :, :n], boxes[:, :, :n])
        out["dn_meta"] = dn.meta()
        return out


def check_inputs(images, mask) -> None:
    """Clear errors for the usual mistakes: a list of images, uint8 pixels, a mask of the wrong shape."""
    if isinstance(images, (list, tuple)):
        sizes = sorted({tuple(im.shape[-2:]) for im in images if torch.is_tensor(im)})
        raise TypeError(f"DETR takes one padded batch tensor [B, 3, H, W], not a list of {len(images)} images (sizes "
                        f"{sizes}): pad them to a common size (detrlib.data.collate does) and pass mask=True on the "
                        "padded pixels")
    if not torch.is_tensor(images) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"images must be a float tensor [B, 3, H, W], got {shape}")
    if not images.is_floating_point():
        raise TypeError(f"images must be float (normalized pixels), got {images.dtype}: convert uint8 images with "
                        "torchvision.transforms.v2.ToDtype(torch.float32, scale=True) and Normalize")
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be bool (True = padding), got {mask.dtype}")
        if mask.shape != (images.shape[0], *images.shape[2:]):
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match images {tuple(images.shape)}: "
                             "expected [B, H, W]")


def build_model(cfg: ModelConfig, compile: bool = False) -> DETR:
    """DETR as ``cfg`` describes it, each part the one ``cfg`` names (:mod:`detrlib.model.registry`), with random
    weights (ImageNet ones for the backbone when ``cfg.pretrained_backbone``). ``compile=True`` wraps the forward in
    ``torch.compile``; the state_dict keeps its names."""
    def new(kind):  # made when its owner asks, so that modules are made (and seeded) in the official order
        return lambda: build(cfg, kind)

    joiner = Joiner(build(cfg, "backbone"), build(cfg, "position_embedding"))
    decoder = getattr(part(cfg, "decoder_layer_type"), "decoder", Decoder)  # a layer type may bring its own loop
    transformer = Transformer(cfg.hidden_dim, cfg.nheads, cfg.enc_layers, cfg.dec_layers, cfg.dim_feedforward,
                              cfg.dropout, new("encoder_layer_type"), new("decoder_layer_type"), decoder)
    denoiser = (Denoiser(cfg.num_classes, cfg.hidden_dim, cfg.dn_groups, cfg.dn_label_noise, cfg.dn_box_noise)
                if cfg.dn_groups > 0 else None)
    model = DETR(joiner, transformer, cfg.num_classes, cfg.num_queries, cfg.aux_loss, denoiser,
                 new("query_type"), cfg.class_head)
    if compile:
        model.compile()
    return model


class PostProcess(nn.Module):
    """Model outputs -> per image ``{"scores", "labels", "boxes"}``, best first.

    Scores and labels ignore the no-object class; boxes become absolute ``x1, y1, x2, y2`` in the size given for
    each image (its original size for evaluation). ``top_k`` keeps the best k queries, ``threshold`` drops scores
    below it. ``sigmoid`` reads the logits of a ``class_head="sigmoid"`` model: a class's score is its sigmoid, and a
    query still gives one detection, its best class."""

    def __init__(self, threshold: float = 0.0, top_k: int | None = None, sigmoid: bool = False):
        super().__init__()
        self.threshold, self.top_k, self.sigmoid = threshold, top_k, sigmoid

    @torch.no_grad()
    def forward(self, outputs: dict, target_sizes) -> list[dict]:
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        sizes = torch.as_tensor(target_sizes, dtype=boxes.dtype, device=boxes.device)
        if sizes.shape != (len(logits), 2):
            raise ValueError(f"target_sizes must be [B, 2] (height, width) for {len(logits)} images, "
                             f"got {tuple(sizes.shape)}")
        scores, labels = (logits.sigmoid() if self.sigmoid else logits.softmax(-1)[..., :-1]).max(-1)
        h, w = sizes.unbind(1)
        scale = torch.stack([w, h, w, h], dim=1)[:, None, :]
        boxes = box_convert(boxes, "cxcywh", "xyxy") * scale
        results = []
        for s, l, b in zip(scores, labels, boxes):
            order = s.argsort(descending=True)[: self.top_k]
            order = order[s[order] >= self.threshold]
            results.append({"scores": s[order], "labels": l[order], "boxes": b[order]})
        return results
