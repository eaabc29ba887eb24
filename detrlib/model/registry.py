"""Model parts by name, the one list of them: each kind's ``ModelConfig`` field names one, :func:`check` tells the
config whether it exists, and :func:`build_model` builds it from here. Every part, whatever its kind, is a class
whose ``from_config(cfg)`` builds it from the ``ModelConfig`` alone (:func:`build`; for a layer kind, one layer) and
whose ``forward`` takes and returns what DETR's own part of that kind does (:class:`Backbone`,
:class:`PositionEmbeddingSine`, :class:`EncoderLayer`, :class:`DecoderLayer`, :class:`LearnedQueries`)."""
from __future__ import annotations

from detrlib.errors import ConfigError

KINDS = ("backbone", "position_embedding", "encoder_layer_type", "decoder_layer_type", "query_type")
PARTS: dict[str, dict] = {kind: {} for kind in KINDS}


def register(kind: str, name: str):
    """Register a class as the part that ``ModelConfig.<kind> = name`` picks. A name is registered once: another part
    under a taken name is refused (the same part again, as when its module is reloaded, replaces itself)."""
    def add(cls):
        if not callable(getattr(cls, "from_config", None)):
            raise TypeError(f"{kind} {name!r}: a part is built from the ModelConfig by its from_config(cfg); "
                            f"give {cls.__qualname__} that classmethod")
        taken = PARTS[kind].get(name)
        if taken is not None and _origin(taken) != _origin(cls):
            raise ValueError(f"{kind} {name!r} is already {'.'.join(_origin(taken))}: register "
                             f"{'.'.join(_origin(cls))} under another name")
        PARTS[kind][name] = cls
        return cls
    return add


def _origin(cls) -> tuple[str, str]:
    return cls.__module__, cls.__qualname__


def part(cfg, kind: str):
    """The class of the part that ``cfg`` (a ``ModelConfig``) names for ``kind``."""
    name = getattr(cfg, kind)
    if name not in PARTS[kind]:
        raise ConfigError(f"model.{kind} must be one of {', '.join(sorted(PARTS[kind]))}, got {name!r}")
    return PARTS[kind][name]


def build(cfg, kind: str):
    """The part that ``cfg`` (a ``ModelConfig``) names for ``kind``, built from ``cfg``."""
    return part(cfg, kind).from_config(cfg)


def check(cfg) -> None:
    """Refuse a ``ModelConfig`` that names a part nobody registered, naming the field."""
    for kind in KINDS:
        part(cfg, kind)
