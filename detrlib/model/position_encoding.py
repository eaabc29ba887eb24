"""Where is each feature-map cell? Two answers: fixed sines (DETR's default) or learned embeddings.

Both return ``[B or 1, d, h, w]``: the first ``d/2`` channels encode the row, the last ``d/2`` the column (sine) or
the reverse (learned), exactly as in the official code, so checkpoints agree."""
from __future__ import annotations

import math

import torch
from torch import nn

from detrlib.model.registry import register


@register("position_embedding", "sine")
class PositionEmbeddingSine(nn.Module):
    """Sines and cosines of each cell's row and column, at ``num_pos_feats / 2`` frequencies each.

    With ``normalize`` (DETR's setting) the coordinates run from 0 to ``scale`` = 2*pi over the *unpadded* part of
    each image, so a small image padded into a large batch gets the same codes as when it is alone. ``mask [B, h, w]``
    is True on padding; ``None`` means no padding."""

    def __init__(self, num_pos_feats: int = 64, temperature: float = 10000, normalize: bool = True,
                 scale: float = 2 * math.pi):
        super().__init__()
        self.num_pos_feats, self.temperature, self.normalize, self.scale = num_pos_feats, temperature, normalize, scale

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.hidden_dim // 2)  # half the features for rows, half for columns

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h, w = features.shape[-2:]
        if mask is None:  # an all-False mask without a batch dimension
            not_mask = torch.ones(1, h, w, dtype=torch.bool, device=features.device)
        else:
            not_mask = ~mask
        y = not_mask.cumsum(1, dtype=torch.float32)
        x = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            y = y / (y[:, -1:, :] + eps) * self.scale
            x = x / (x[:, :, -1:] + eps) * self.scale
        i = torch.arange(self.num_pos_feats, dtype=torch.float32, device=features.device)
        dim_t = self.temperature ** (2 * (i // 2) / self.num_pos_feats)
        pos_x = x[..., None] / dim_t
        pos_y = y[..., None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


@register("position_embedding", "learned")
class PositionEmbeddingLearned(nn.Module):
    """One learned vector per column and per row (at most 50 of each), concatenated."""

    def __init__(self, num_pos_feats: int = 128, max_size: int = 50):
        super().__init__()
        self.row_embed = nn.Embedding(max_size, num_pos_feats)
        self.col_embed = nn.Embedding(max_size, num_pos_feats)
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.hidden_dim // 2)  # half the features for rows, half for columns

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h, w = features.shape[-2:]
        limit = self.row_embed.num_embeddings
        if h > limit or w > limit:
            raise ValueError(f"feature map {h}x{w} is larger than the learned position embedding's "
                             f"{limit}x{limit}: use smaller images or position_embedding='sine'")
        x_emb = self.col_embed(torch.arange(w, device=features.device))
        y_emb = self.row_embed(torch.arange(h, device=features.device))
        pos = torch.cat([x_emb.unsqueeze(0).expand(h, w, -1), y_emb.unsqueeze(1).expand(h, w, -1)], dim=-1)
        return pos.permute(2, 0, 1).unsqueeze(0)

