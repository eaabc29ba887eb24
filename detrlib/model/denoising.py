"""Denoising queries (DN-DETR, Li et al. 2022): give the decoder noised ground truth to repair.

Early in training the Hungarian matching is unstable: an object is answered by one query now, by another a few steps
later, so queries get contradicting targets. DN-DETR adds, in training only, queries made from noised ground truth:

- each object's label is flipped to another class with probability ``label_noise`` (0.2), and its box jittered by up
  to ``box_noise`` (0.4, :func:`noise_boxes`) and clamped to the image;
- a query's content is the noised label's embedding with a last feature, the indicator, set to 1 (a matching query's
  content is DETR's zeros: indicator 0); its positional part is the noised box, sine-encoded and passed through an
  MLP, where a matching query has a learned embedding;
- this is done ``groups`` times (5) with independent noise; each group holds P queries, P the largest object count in
  the batch, so images with fewer objects have padding slots;
- an attention mask keeps the matching queries from seeing any denoising query (they would see the answers) and each
  group from seeing the others; padding slots are hidden from everyone.

Each denoising query learns its object, unmatched (:class:`detrlib.criterion.DenoisingCriterion`). Made from the
targets, the queries are absent at inference, where the model is exactly DETR."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence
from torchvision.ops import box_convert


def noise_labels(labels: Tensor, p: float, num_classes: int, generator=None) -> Tensor:
    """Each label replaced by a different class, drawn uniformly, with probability ``p``."""
    if num_classes < 2 or p <= 0:
        return labels.clone()
    flip = torch.rand(labels.shape, generator=generator, device=labels.device) < p
    shift = torch.randint(1, num_classes, labels.shape, generator=generator, device=labels.device)
    return torch.where(flip, (labels + shift) % num_classes, labels)


def noise_boxes(boxes: Tensor, scale: float, generator=None) -> Tensor:
    """Boxes ``[..., 4]`` (normalized cx, cy, w, h) with the centre moved by up to ``scale * w/2``, ``scale * h/2``
    and the size scaled by a factor in ``[1 - scale, 1 + scale]``, uniformly, then clamped to the image. With
    ``scale < 1`` a jittered box still covers the original centre, so a clamped box keeps a positive size."""
    u = torch.rand(boxes.shape, generator=generator, device=boxes.device) * 2 - 1
    wh = boxes[..., 2:]
    centre = boxes[..., :2] + u[..., :2] * scale * wh / 2
    size = wh * (1 + u[..., 2:] * scale)
    xyxy = box_convert(torch.cat([centre, size], -1), "cxcywh", "xyxy").clamp(0, 1)
    return box_convert(xyxy, "xyxy", "cxcywh")


def sine_box_embedding(boxes: Tensor, dim: int, temperature: float = 10000) -> Tensor:
    """``[..., k]`` coordinates in [0, 1] (a box's 4, a point's 2) -> ``[..., dim]``: each coordinate gets ``dim / k``
    sines and cosines, the encoding DETR gives pixel positions (coordinates scaled by 2π)."""
    k = boxes.shape[-1]
    if dim % (2 * k):
        raise ValueError(f"hidden_dim {dim} must be divisible by {2 * k} to sine-encode {k} coordinates")
    n = dim // k
    freq = temperature ** (2 * (torch.arange(n, device=boxes.device) // 2) / n)
    angles = boxes[..., None].float() * 2 * math.pi / freq  # [..., k, n]
    return torch.stack([angles[..., 0::2].sin(), angles[..., 1::2].cos()], -1).flatten(-3)  # [..., k * n]


def denoising_attention_mask(groups: int, pad: int, num_queries: int) -> Tensor:
    """``[L, L]`` bool, True = may not attend, for the decoder's queries laid out as ``groups`` blocks of ``pad``
    denoising queries followed by ``num_queries`` matching queries (L = groups * pad + num_queries): a matching query
    sees no denoising query; a denoising query sees its own group and the matching queries."""
    n = groups * pad
    blocked = torch.zeros(n + num_queries, n + num_queries, dtype=torch.bool)
    group = torch.arange(n) // max(pad, 1)
    blocked[:n, :n] = group[:, None] != group[None, :]
    blocked[n:, :n] = True
    return blocked


@dataclass
class DenoisingBatch:
    """The denoising queries of a batch, to put in front of the matching queries.

    ``content``, ``pos``: ``[B, N, d]`` with N = groups * pad (query ``g * pad + j`` comes from object j of its image,
    in group g); ``attn_mask``: ``[B, 1, N + Q, N + Q]`` for the decoder's self-attention (True = may not attend);
    ``valid``: ``[B, N]``, False on padding slots; ``labels [B, N]``, ``boxes [B, N, 4]``: the noised inputs."""

    content: Tensor
    pos: Tensor
    attn_mask: Tensor
    valid: Tensor
    labels: Tensor
    boxes: Tensor
    groups: int
    pad: int

    def meta(self) -> dict:
        """What the loss needs to pair each denoising output with its object (``outputs["dn_meta"]``)."""
        return {"groups": self.groups, "pad": self.pad, "num_dn": self.groups * self.pad,
                "labels": self.labels, "boxes": self.boxes}


class Denoiser(nn.Module):
    """Builds :class:`DenoisingBatch` from the targets: ``denoiser(targets, num_queries)``. Its parameters: the label
    embedding (``num_classes`` x ``hidden_dim - 1``, the last feature being the indicator) and the 2-layer MLP that
    maps a sine-encoded box to a query position."""

    def __init__(self, num_classes: int, hidden_dim: int, groups: int = 5, label_noise: float = 0.2,
                 box_noise: float = 0.4):
        super().__init__()  # ModelConfig checks the noise; dn_groups=0 builds no Denoiser
        self.num_classes, self.hidden_dim = num_classes, hidden_dim
        self.groups, self.label_noise, self.box_noise = groups, label_noise, box_noise
        self.label_embed = nn.Embedding(num_classes, hidden_dim - 1)
        self.box_embed = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                                       nn.Linear(hidden_dim, hidden_dim))

    def forward(self, targets: list[dict], num_queries: int, generator=None) -> DenoisingBatch:
        device = self.label_embed.weight.device
        sizes = [len(t["labels"]) for t in targets]
        pad, g = max(sizes, default=0), self.groups
        labels = pad_sequence([t["labels"] for t in targets], batch_first=True).to(device)  # [B, pad]
        boxes = pad_sequence([t["boxes"] for t in targets], batch_first=True, padding_value=0.5).to(device)
        valid = torch.arange(pad, device=device)[None] < torch.tensor(sizes, device=device)[:, None]
        labels, boxes, valid = labels.repeat(1, g), boxes.repeat(1, g, 1).float(), valid.repeat(1, g)
        labels = noise_labels(labels, self.label_noise, self.num_classes, generator)
        boxes = noise_boxes(boxes, self.box_noise, generator)

        embedded = self.label_embed(labels)
        content = torch.cat([embedded, torch.ones_like(embedded[..., :1])], -1)
        pos = self.box_embed(sine_box_embedding(boxes, self.hidden_dim))
        blocked = denoising_attention_mask(g, pad, num_queries).to(device)
        hidden = torch.cat([~valid, valid.new_zeros(len(targets), num_queries)], 1)  # padding slots
        attn_mask = (blocked | hidden[:, None, :])[:, None]
        return DenoisingBatch(content, pos, attn_mask, valid, labels, boxes, g, pad)

    def extra_repr(self) -> str:
        return f"groups={self.groups}, label_noise={self.label_noise}, box_noise={self.box_noise}"
