"""Model parts by name: the ``ModelConfig`` field of each kind names one, and :func:`build_model` builds
it from here. A part takes the arguments of DETR's own part of its kind (:class:`Backbone`,
:class:`PositionEmbeddingSine`, :class:`EncoderLayer`, :class:`DecoderLayer`, :class:`LearnedQueries`)
and returns what that one returns."""
from __future__ import annotations

from detrlib.config import ConfigError

KINDS = ("backbone", "position_embedding", "encoder_layer_type", "decoder_layer_type", "query_type")
PARTS: dict[str, dict] = {kind: {} for kind in KINDS}


def register(kind: str, name: str):
    """Register a class (or a function building one) as the part that ``ModelConfig.<kind> = name`` picks."""
    def add(builder):
        PARTS[kind][name] = builder
        return builder
    return add


def part(cfg, kind: str):
    """The builder of the part that ``cfg`` names for ``kind``."""
    name = getattr(cfg, kind)
    if name not in PARTS[kind]:
        raise ConfigError(f"model.{kind} must be one of {', '.join(sorted(PARTS[kind]))}, got {name!r}")
    return PARTS[kind][name]
