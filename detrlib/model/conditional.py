"""Conditional DETR (Meng et al. 2021): ``ModelConfig(decoder_layer_type="conditional")``.

DETR adds positions to contents before the cross-attention compares them, so where a query looks must be learned out
of one mixed vector, which is slow. Conditional DETR keeps the two apart and ties the "where" to a point:

- each object query ``o`` gets a *reference point* ``s = sigmoid(MLP(o))`` (x, y in [0, 1] of the image) from one
  head that every decoder layer shares (:meth:`Decoder.reference_points`);
- its *spatial query* is ``p_q = λ_q ⊙ PE(s)``: ``PE`` the sine encoding DETR gives the image tokens' positions (so
  ``PE(s)`` is what a key at ``s`` carries), ``λ_q = MLP(f)`` a scale read from the decoder embedding ``f`` entering
  the layer, 1 at the first layer, where ``f`` holds nothing yet;
- each head's query is its content half and spatial half side by side, each key its content and position, so a score
  is content·content + spatial query·key position. The first layer also adds the positions to the content halves
  (the projected object query to the query, the key's position to the key), as DETR does;
- every layer's box is ``sigmoid(FFN(f) + [logit(s), 0, 0])`` (:meth:`~detrlib.model.detr.DETR.predict`), relative to
  the point, the FFN's last layer starting at zero so that a box starts centred on its point.

The paper trains it with one sigmoid per class and no "no object" class, the sigmoid focal loss (α = 0.25, γ = 2) and
a focal matching cost, classification weighing 2 in both: the config changes that :data:`CONDITIONAL_DETR` lists.

Where detrlib differs from the official code: the self-attention projects content plus position with one matrix, as
DETR does (the official layer uses two); :class:`~detrlib.model.detr.PostProcess` keeps one detection per query, as
for DETR (the official code keeps the 100 best query-class pairs), so both are evaluated on equally many detections;
and the paper's 300 queries are a setting (``model.num_queries``) that :data:`CONDITIONAL_DETR` leaves at the
profile's, so a comparison with DETR changes the method and not the query count."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from detrlib.model.attention import Attention
from detrlib.model.denoising import sine_box_embedding
from detrlib.model.detr import MLP
from detrlib.model.registry import register
from detrlib.model.transformer import Decoder, DecoderLayer

# The paper's recipe as changes to a config (``cfg.replace(**CONDITIONAL_DETR)``, or ``--set`` each)
CONDITIONAL_DETR = {"model.decoder_layer_type": "conditional", "model.class_head": "sigmoid",
                    "train.class_loss": "sigmoid_focal", "train.cls_loss_coef": 2.0, "train.set_cost_class": 2.0}


def sine_point_embedding(points: torch.Tensor, dim: int) -> torch.Tensor:
    """Points ``[..., 2]`` (x, y in [0, 1]) -> ``[..., dim]``, laid out as
    :class:`~detrlib.model.position_encoding.PositionEmbeddingSine` lays out a key's position (the row's ``dim / 2``
    features, then the column's): a point and a key at the same place encode alike."""
    return sine_box_embedding(points.flip(-1), dim)


class ConditionalAttention(Attention):
    """Attention whose query and key are, in each head, a content half and a spatial half side by side. The content
    halves and the values use :class:`Attention`'s projections, the spatial halves two more. A ``query_pos`` (first
    layer only: the projected object query) is added to the content query, and the projected key position then to
    the content key too."""

    def __init__(self, d_model: int, nheads: int, dropout: float = 0.0):
        super().__init__(d_model, nheads, dropout)
        self.spatial_query = nn.Linear(d_model, d_model)
        self.spatial_key = nn.Linear(d_model, d_model)

    def forward(self, query, key, value, spatial_query, key_pos, key_padding_mask=None, query_pos=None):
        d, w, b = self.d_model, self.in_proj_weight, self.in_proj_bias
        content_q, content_k, v = (F.linear(x, w[i * d : (i + 1) * d], b[i * d : (i + 1) * d])
                                   for i, x in enumerate((query, key, value)))
        position_k = self.spatial_key(key_pos)
        if query_pos is not None:
            content_q, content_k = content_q + query_pos, content_k + position_k
        q = torch.cat([self._heads(content_q), self._heads(self.spatial_query(spatial_query))], -1)
        k = torch.cat([self._heads(content_k), self._heads(position_k)], -1)
        return self.attend(q, k, self._heads(v), key_padding_mask)


class ConditionalDecoder(Decoder):
    """The decoder loop of Conditional DETR, with the parts its layers share: the reference head (object query ->
    point), the scale ``λ_q`` (decoder embedding -> ``d`` factors) and the first layer's projection of the object
    query into its content query."""

    def __init__(self, num_layers: int, d_model: int, new_layer):
        super().__init__(num_layers, d_model, new_layer)
        self.reference_head = MLP(d_model, d_model, 2, 2)
        self.query_scale = MLP(d_model, d_model, d_model, 2)
        self.first_query_pos = nn.Linear(d_model, d_model)

    def forward(self, tgt, memory, pos, query_pos, padding_mask=None, tgt_mask=None):
        """As :meth:`Decoder.forward`: every layer's output after the final norm, ``[num_layers, B, Q, d]``."""
        position = sine_point_embedding(self.reference_points(query_pos), tgt.shape[-1])  # PE(s)
        outputs = []
        for i, layer in enumerate(self.layers):
            first = i == 0
            scale = 1 if first else self.query_scale(tgt)  # λ_q: the identity at the first layer
            tgt = layer(tgt, memory, pos, query_pos, padding_mask, tgt_mask, spatial_query=scale * position,
                        content_pos=self.first_query_pos(query_pos) if first else None)
            outputs.append(self.norm(tgt))
        return torch.stack(outputs)


@register("decoder_layer_type", "conditional")
class ConditionalDecoderLayer(DecoderLayer):
    """DETR's decoder layer with Conditional DETR's cross-attention (:meth:`cross_attend`), run by
    :class:`ConditionalDecoder` (``decoder``)."""

    decoder = ConditionalDecoder

    def __init__(self, d_model: int, nheads: int, dim_feedforward: int, dropout: float):
        super().__init__(d_model, nheads, dim_feedforward, dropout, cross_attention=ConditionalAttention)

    def cross_attend(self, tgt, memory, pos, query_pos, padding_mask, spatial_query, content_pos=None):
        """Content ``tgt`` with memory, and the spatial query ``λ_q ⊙ PE(s)`` with the keys' positions ``pos``;
        ``content_pos`` (first layer only) adds the object query to the content query."""
        return self.multihead_attn(tgt, memory, memory, spatial_query, pos.expand_as(memory), padding_mask,
                                   content_pos)[0]
