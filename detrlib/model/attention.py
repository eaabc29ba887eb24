"""Multi-head attention with the parameters of ``nn.MultiheadAttention`` and PyTorch's fused kernel.

:class:`Attention` keeps the official checkpoint's layout (``in_proj_weight`` [3d, d]: query, key and value
projections stacked; ``in_proj_bias``; ``out_proj``), so it loads, but takes batch-first inputs and runs
``F.scaled_dot_product_attention``, a fused kernel that never materialises the attention weights:
:func:`record_attention` (chapter 2's pictures) computes them a second time from the same queries and keys."""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention, batch first: ``query [B, L, d]``, ``key``/``value [B, S, d]``.

    Masks are boolean and follow ``nn.MultiheadAttention``: True means "may not attend". ``key_padding_mask [B, S]``
    hides padded keys; ``attn_mask [L, S]`` or ``[B, nheads, L, S]`` hides pairs (denoising queries use it). Returns
    ``(output [B, L, d], weights)``, ``weights [B, nheads, L, S]`` None unless :func:`record_attention` is active."""

    def __init__(self, d_model: int, nheads: int, dropout: float = 0.0):
        super().__init__()  # ModelConfig checks that nheads divides hidden_dim
        self.d_model, self.nheads, self.dropout = d_model, nheads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        self.record = False
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.nheads, self.d_model // self.nheads).transpose(1, 2)

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None):
        d, w, b = self.d_model, self.in_proj_weight, self.in_proj_bias
        if query is key:  # self-attention: one matmul for the query and key projections
            q, k = F.linear(query, w[: 2 * d], b[: 2 * d]).chunk(2, dim=-1)
        else:
            q, k = F.linear(query, w[:d], b[:d]), F.linear(key, w[d : 2 * d], b[d : 2 * d])
        v = F.linear(value, w[2 * d :], b[2 * d :])
        return self.attend(self._heads(q), self._heads(k), self._heads(v), key_padding_mask, attn_mask)

    def attend(self, q, k, v, key_padding_mask=None, attn_mask=None):
        """The attention of projected heads ``q [B, nheads, L, e]``, ``k [B, nheads, S, e]`` and
        ``v [B, nheads, S, d / nheads]``, through ``out_proj``: ``(output [B, L, d], weights)``."""
        allowed = _allowed(key_padding_mask, attn_mask)
        dtype = q.dtype
        if q.device.type == "cpu" and dtype == torch.bfloat16 and torch.is_grad_enabled():
            # torch's CPU kernel is fast in bf16 forward, but its bf16 backward is several times slower
            # than fp32's at the quick model's sizes (64 tokens: 9.7 ms against 2.7 ms forward + backward)
            q, k, v = q.float(), k.float(), v.float()
        with torch.autocast("cpu", enabled=False) if q.dtype != dtype else nullcontext():
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0)
        out = self.out_proj(out.to(dtype).transpose(1, 2).flatten(2))

        weights = None
        if self.record:
            scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
            if allowed is not None:
                scores = scores.masked_fill(~allowed, float("-inf"))
            weights = scores.softmax(-1).detach()
        return out, weights


def _allowed(key_padding_mask, attn_mask):
    """One boolean mask in the convention of ``scaled_dot_product_attention`` (True = may attend)."""
    for name, m in (("key_padding_mask", key_padding_mask), ("attn_mask", attn_mask)):
        if m is not None and m.dtype != torch.bool:
            raise TypeError(f"{name} must be a bool tensor (True = may not attend), got {m.dtype}")
    if key_padding_mask is None and attn_mask is None:
        return None
    blocked = key_padding_mask[:, None, None, :] if key_padding_mask is not None else False
    if attn_mask is not None:
        blocked = blocked | attn_mask
    return ~blocked


@contextmanager
def record_attention(model: nn.Module):
    """Record the attention weights of every :class:`Attention` in ``model`` during the block. Yields a dict filled by
    forward hooks: module name (as in ``model.named_modules()``) -> weights ``[B, nheads, L, S]`` of its last call,
    e.g. ``maps["transformer.decoder.layers.5.multihead_attn"]``."""
    maps: dict[str, torch.Tensor] = {}
    modules = {name: m for name, m in model.named_modules() if isinstance(m, Attention)}

    def hook(name):
        return lambda module, inputs, output: maps.__setitem__(name, output[1])

    handles = [m.register_forward_hook(hook(name)) for name, m in modules.items()]
    for m in modules.values():
        m.record = True
    try:
        yield maps
    finally:
        for m in modules.values():
            m.record = False
        for h in handles:
            h.remove()
