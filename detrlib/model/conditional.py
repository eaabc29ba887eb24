"""Conditional DETR's cross-attention (Meng et al. 2021): ``ModelConfig(decoder_layer_type="conditional")``.

DETR adds a query's position to its content, and a key's position to its image feature, before the
cross-attention compares them: where a query looks has to be learned out of one mixed vector, which
is slow. Conditional DETR keeps the two apart. Each head's query is its content concatenated with a
*spatial query*, each key its content concatenated with its position, so an attention score is a sum
of two dot products: content with content, and spatial query with key position. The spatial query
is a reference point ``s = sigmoid(MLP(object query))``, sine-encoded as DETR encodes pixel
positions and scaled feature by feature by ``MLP(decoder embedding)``: the content decides which
part of the region around ``s`` (an extremity, the centre) this query attends to.

Kept small, the variant is one decoder layer, and DETR's heads and decoder are unchanged. Unlike
the paper's code, each layer has its own reference-point head (the paper shares one), the first
layer does not add the object query to its content query, the scale reads the embedding after
self-attention, and boxes are not predicted relative to ``s``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from detrlib.model.attention import Attention
from detrlib.model.denoising import sine_box_embedding
from detrlib.model.detr import MLP
from detrlib.model.registry import register
from detrlib.model.transformer import DecoderLayer


class ConditionalAttention(Attention):
    """Attention whose query and key are, in each head, a content half and a spatial half side by side:
    ``(query, key, value, spatial_query, key_pos, key_padding_mask)``. The content halves and the
    values use :class:`Attention`'s projections, the spatial halves two more."""

    def __init__(self, d_model: int, nheads: int, dropout: float = 0.0):
        super().__init__(d_model, nheads, dropout)
        self.spatial_query = nn.Linear(d_model, d_model)
        self.spatial_key = nn.Linear(d_model, d_model)

    def forward(self, query, key, value, spatial_query, key_pos, key_padding_mask=None):
        d, w, b = self.d_model, self.in_proj_weight, self.in_proj_bias
        content_q, content_k, v = (F.linear(x, w[i * d : (i + 1) * d], b[i * d : (i + 1) * d])
                                   for i, x in enumerate((query, key, value)))
        q = torch.cat([self._heads(content_q), self._heads(self.spatial_query(spatial_query))], -1)
        k = torch.cat([self._heads(content_k), self._heads(self.spatial_key(key_pos))], -1)
        return self.attend(q, k, self._heads(v), key_padding_mask)


@register("decoder_layer_type", "conditional")
class ConditionalDecoderLayer(DecoderLayer):
    """DETR's decoder layer with Conditional DETR's cross-attention (:meth:`cross_attend`)."""

    def __init__(self, d_model: int, nheads: int, dim_feedforward: int, dropout: float):
        super().__init__(d_model, nheads, dim_feedforward, dropout, cross_attention=ConditionalAttention)
        self.reference_point = MLP(d_model, d_model, 2, 2)  # object query -> s, before the sigmoid
        self.query_scale = MLP(d_model, d_model, d_model, 2)  # decoder embedding -> the spatial query's scale

    def cross_attend(self, tgt, memory, pos, query_pos, padding_mask):
        """Content ``tgt`` with memory, and the spatial query with the keys' positions ``pos``."""
        s = self.reference_point(query_pos).sigmoid()  # [B, Q, 2]: x, y in [0, 1] of the image
        spatial_query = self.query_scale(tgt) * sine_box_embedding(s, tgt.shape[-1])
        return self.multihead_attn(tgt, memory, memory, spatial_query, pos.expand_as(memory), padding_mask)[0]
