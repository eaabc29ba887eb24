"""DETR's transformer: post-norm encoder and decoder layers, positions added at every layer.

Unlike ``nn.Transformer``, DETR adds the position encoding to the queries and keys of *every* attention layer (not
once to the input), and the decoder returns every layer's output, each through the decoder's final LayerNorm, for the
auxiliary losses. Tensors are batch first; parameter names follow the official code."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from detrlib.model.attention import Attention
from detrlib.model.registry import register


@register("encoder_layer_type", "detr")
class EncoderLayer(nn.Module):
    """Self-attention among the image tokens, then a feed-forward network, each with a residual and LayerNorm."""

    def __init__(self, d_model: int, nheads: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = Attention(d_model, nheads, dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.hidden_dim, cfg.nheads, cfg.dim_feedforward, cfg.dropout)

    def forward(self, src, pos, padding_mask=None):
        q = src + pos
        src = self.norm1(src + self.dropout1(self.self_attn(q, q, src, padding_mask)[0]))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout2(ffn))


@register("decoder_layer_type", "detr")
class DecoderLayer(nn.Module):
    """Self-attention among the queries, cross-attention to the image tokens (:meth:`cross_attend`, by a
    ``cross_attention`` module), a feed-forward network; each with a residual and LayerNorm."""

    def __init__(self, d_model: int, nheads: int, dim_feedforward: int, dropout: float, cross_attention=Attention):
        super().__init__()
        self.self_attn = Attention(d_model, nheads, dropout)
        self.multihead_attn = cross_attention(d_model, nheads, dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.hidden_dim, cfg.nheads, cfg.dim_feedforward, cfg.dropout)

    def forward(self, tgt, memory, pos, query_pos, padding_mask=None, tgt_mask=None, **cross):
        """``cross``: what a variant's decoder hands on to its :meth:`cross_attend` (nothing for DETR)."""
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, q, tgt, attn_mask=tgt_mask)[0]))
        tgt = self.norm2(tgt + self.dropout2(self.cross_attend(tgt, memory, pos, query_pos, padding_mask, **cross)))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ffn))

    def cross_attend(self, tgt, memory, pos, query_pos, padding_mask):
        """The queries ``[B, Q, d]`` read the image tokens ``memory [B, HW, d]``: DETR adds positions to both."""
        return self.multihead_attn(tgt + query_pos, memory + pos, memory, padding_mask)[0]


class Encoder(nn.Module):
    """``num_layers`` encoder layers, each made by ``new_layer()``, one after the other."""

    def __init__(self, num_layers: int, new_layer):
        super().__init__()
        self.layers = nn.ModuleList(new_layer() for _ in range(num_layers))

    def forward(self, src, pos, padding_mask=None):
        for layer in self.layers:
            src = layer(src, pos, padding_mask)
        return src


class Decoder(nn.Module):
    """``num_layers`` decoder layers, each made by ``new_layer()``; one LayerNorm for every layer's output.

    ``reference_head`` is None: DETR's queries have no reference point, its boxes are absolute. A variant's decoder
    that sets it (Conditional DETR's) gives each query the point :meth:`reference_points`, its box relative to it."""

    def __init__(self, num_layers: int, d_model: int, new_layer):
        super().__init__()
        self.layers = nn.ModuleList(new_layer() for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.reference_head = None

    def reference_points(self, query_pos):
        """``sigmoid(reference_head(query_pos))``: each query's point ``[B, Q, 2]`` (x, y in [0, 1] of
        the image), or None without a reference head."""
        return None if self.reference_head is None else self.reference_head(query_pos).sigmoid()

    def forward(self, tgt, memory, pos, query_pos, padding_mask=None, tgt_mask=None):
        """Returns every layer's output after the final norm: ``[num_layers, B, Q, d]``."""
        outputs = []
        for layer in self.layers:
            tgt = layer(tgt, memory, pos, query_pos, padding_mask, tgt_mask)
            outputs.append(self.norm(tgt))
        return torch.stack(outputs)


class Transformer(nn.Module):
    """DETR's encoder and decoder. ``encoder_layer()`` and ``decoder_layer()`` make one layer each (DETR's by
    default); ``decoder`` runs the decoder layers (Conditional DETR's, whose layers share parts, has its own)."""

    def __init__(self, d_model=256, nhead=8, num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=2048,
                 dropout=0.1, encoder_layer=None, decoder_layer=None, decoder=Decoder):
        super().__init__()
        args = d_model, nhead, dim_feedforward, dropout
        self.encoder = Encoder(num_encoder_layers, encoder_layer or (lambda: EncoderLayer(*args)))
        self.decoder = decoder(num_decoder_layers, d_model, decoder_layer or (lambda: DecoderLayer(*args)))
        self.d_model, self.nhead = d_model, nhead
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src, pos, padding_mask, query_pos, tgt, tgt_mask=None):
        """Encode image tokens ``src [B, HW, d]`` (positions ``pos``, True in ``padding_mask [B, HW]`` where padded),
        then decode the queries: ``query_pos [B, Q, d]`` their positions, ``tgt [B, Q, d]`` their content
        (:class:`~detrlib.model.detr.LearnedQueries`: learned, and zeros); ``tgt_mask [Q, Q]`` (True = may not attend)
        restricts the decoder's self-attention. Returns ``(hs [layers, B, Q, d], memory [B, HW, d])``."""
        memory = self.encoder(src, pos, padding_mask)
        return self.decoder(tgt, memory, pos, query_pos, padding_mask, tgt_mask), memory
