"""Model parts by name, the one list of them: the ``ModelConfig`` field of each kind names one, the
config asks here whether it exists (:func:`check`), and :func:`build_model` builds it from here. A
part takes the arguments of DETR's own part of its kind (:class:`Backbone`,
:class:`PositionEmbeddingSine`, :class:`EncoderLayer`, :class:`DecoderLayer`, :class:`LearnedQueries`)
and returns what that one returns."""
from __future__ import annotations

from detrlib.errors import ConfigError

KINDS = ("backbone", "position_embedding", "encoder_layer_type", "decoder_layer_type", "query_type")
PARTS: dict[str, dict] = {kind: {} for kind in KINDS}


def register(kind: str, name: str):
    """Register a class (or a function building one) as the part that ``ModelConfig.<kind> = name``
    picks. A name is registered once: another part under a taken name is refused (the same part
    again, as when its module is reloaded, replaces itself)."""
    def add(builder):
        taken = PARTS[kind].get(name)
        if taken is not None and _origin(taken) != _origin(builder):
            raise ValueError(f"{kind} {name!r} is already {'.'.join(_origin(taken))}: register "
                             f"{'.'.join(_origin(builder))} under another name")
        PARTS[kind][name] = builder
        return builder
    return add


def _origin(builder) -> tuple[str, str]:
    return builder.__module__, builder.__qualname__


def part(cfg, kind: str):
    """The builder of the part that ``cfg`` (a ``ModelConfig``) names for ``kind``."""
    name = getattr(cfg, kind)
    if name not in PARTS[kind]:
        raise ConfigError(f"model.{kind} must be one of {', '.join(sorted(PARTS[kind]))}, got {name!r}")
    return PARTS[kind][name]


def check(cfg) -> None:
    """Refuse a ``ModelConfig`` that names a part nobody registered, naming the field."""
    for kind in KINDS:
        part(cfg, kind)
