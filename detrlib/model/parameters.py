"""How many parameters, where, and how many of them train."""
from __future__ import annotations

from torch import nn


def count_parameters(model: nn.Module, depth: int = 2) -> list[dict]:
    """Rows ``{"module", "total", "trainable"}``, one per module path cut to ``depth`` names (``depth=2``:
    ``backbone.0``, ``transformer.encoder``, ...), then a ``"total"`` row. Buffers (e.g. ``FrozenBatchNorm2d``'s
    statistics and affine terms) are not parameters and are not counted, as in DETR's own count."""
    rows: dict[str, dict] = {}
    for name, p in model.named_parameters():
        module = ".".join(name.split(".")[:-1][:depth]) or name
        row = rows.setdefault(module, {"module": module, "total": 0, "trainable": 0})
        row["total"] += p.numel()
        row["trainable"] += p.numel() if p.requires_grad else 0
    table = list(rows.values())
    table.append({"module": "total", "total": sum(r["total"] for r in table),
                  "trainable": sum(r["trainable"] for r in table)})
    return table
