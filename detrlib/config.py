"""Every knob in one place: data, model and training settings, and the four profiles.

- ``smoke``: every code path runs in seconds (unit tests, nbval in CI).
- ``quick``: real learning on a laptop CPU in minutes, on the generated toy VOC.
- ``gpu``: a chapter on a Colab GPU: the reference project's model, fine-tuned from the COCO checkpoint on VOC 2007,
  each run bounded to about a quarter of an hour.
- ``full``: the reference project's whole recipe on VOC 07+12: many GPU hours, one resumable command.

A chapter's ``parameters`` cell picks ``gpu`` on a CUDA GPU and ``quick`` otherwise; ``DETRLIB_PROFILE`` overrides it.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

from detrlib.errors import ConfigError

GPU_PROFILES = ("gpu", "full")  # the profiles that train DETR-R50 and need a CUDA GPU
REPOSITORY = "https://github.com/detrlib/detr-book"  # as in _config.yml (a test keeps them equal)
BRANCH = "main"


def knob(default, help: str):
    """A config field and its help text, which the command line's flags show."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are resized.

    ``root`` holds a ``VOCdevkit/`` folder (relative paths live under :func:`workdir`); an empty root means the
    generated toy VOC, made once per setting under :func:`workdir`. A set is ``"<year folder>:<split>"``.
    """

    root: str = knob("", "a folder holding VOCdevkit/ (relative: under DETRLIB_HOME); empty: the generated toy VOC")
    download: bool = knob(False, "fetch missing VOC archives into root (the full profile)")
    train_sets: tuple[str, ...] = knob(("VOC2007:trainval", "VOC2012:trainval"), "training sets, YEAR:split")
    val_sets: tuple[str, ...] = knob(("VOC2007:test",), "validation sets, YEAR:split")
    toy_train: int = knob(0, "training images the toy generator writes when root is empty")
    toy_val: int = knob(0, "validation images of the toy VOC")
    toy_seed: int = knob(0, "seed of the toy VOC")
    toy_image_size: int = knob(128, "longer side of a toy image in pixels")
    toy_max_objects: int = knob(6, "objects per toy image, at most")
    toy_clutter: float = knob(4.0, "decoys, lines and dots per toy image, on average")
    train_scales: tuple[int, ...] = knob((480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800), "shorter sides to draw")
    max_size: int = knob(1333, "longest side of a resized image")
    val_size: int = knob(800, "shorter side of a validation image")
    val_subset: int = knob(0, "evaluate on a fixed random subset of this many validation images; 0: all")
    random_crop: bool = knob(True, "DETR's random crop before resizing a training image")
    keep_difficult: bool = knob(False, "train on VOC's difficult objects too")
    longtail: str = knob("", 'imbalance profile of the "modified VOC" (exp50, step10, ...); empty keeps every image')
    longtail_seed: int = knob(0, "seed of the long-tailed subset")
    repeat_factor_t: float = knob(0.0, "LVIS repeat-factor threshold; 0 turns repeat-factor sampling off")
    num_workers: int = knob(2, "DataLoader worker processes")

    def __post_init__(self):
        check_fields(self, "data")


@dataclass(frozen=True)
class ModelConfig:
    """DETR's architecture. Names follow the original DETR arguments where one exists."""

    backbone: str = knob("resnet50", "the ResNet of the backbone")
    dilation: bool = knob(False, "dilate the last ResNet stage (DETR's DC5)")
    position_embedding: str = knob("sine", "position encoding, sine or learned")
    hidden_dim: int = knob(256, "width of the transformer")
    nheads: int = knob(8, "attention heads")
    enc_layers: int = knob(6, "encoder layers")
    dec_layers: int = knob(6, "decoder layers")
    dim_feedforward: int = knob(2048, "width of the feed-forward layers")
    dropout: float = knob(0.1, "dropout in the transformer")
    num_queries: int = knob(100, "object queries")
    num_classes: int = knob(91, "object classes, without no-object (the class head has one output more)")
    aux_loss: bool = knob(True, "losses at every decoder layer")
    # detrlib's additions, for models trained from scratch on a CPU
    backbone_stages: int = knob(4, "ResNet stages kept: 4 -> stride 32, 3 -> stride 16, 2 -> stride 8")
    frozen_bn: bool = knob(True, "FrozenBatchNorm2d as in DETR; false trains ordinary BatchNorm2d")
    frozen_stages: int = knob(1, "k > 0 freezes the stem and layer1..layerk (DETR: 1); 0 trains it all")
    pretrained_backbone: bool = knob(False, "torchvision's ImageNet weights (needs a download)")
    encoder_layer_type: str = knob("detr", "the encoder layer, by its name in detrlib.model.registry")
    decoder_layer_type: str = knob("detr", "the decoder layer, by its registry name (conditional: Conditional DETR)")
    query_type: str = knob("learned", "the object queries, by their name in detrlib.model.registry")
    class_head: str = knob("softmax", "softmax: C + 1 logits, no-object last (DETR); sigmoid: C logits, one sigmoid "
                                      "each (Conditional DETR; trained with train.class_loss=sigmoid_focal)")
    dn_groups: int = knob(0, "denoising groups (chapter 5); 0 turns denoising off")
    dn_label_noise: float = knob(0.2, "share of denoising labels flipped")
    dn_box_noise: float = knob(0.4, "denoising box noise, relative to the box size")

    def __post_init__(self):
        check_fields(self, "model")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, loss weights, precision and bookkeeping."""

    epochs: int = knob(50, "training epochs")
    max_steps: int = knob(0, "stop after this many optimizer steps; 0: run every epoch")
    max_minutes: float = knob(0, "stop cleanly after this many minutes, resumed sessions included; 0: no cap")
    batch_size: int = knob(4, "images per batch and process")
    grad_accum_steps: int = knob(1, "batches per optimizer step")
    lr: float = knob(1e-4, "learning rate of the transformer")
    lr_backbone: float = knob(1e-5, "learning rate of the backbone")
    weight_decay: float = knob(1e-4, "AdamW's weight decay")
    clip_max_norm: float = knob(0.1, "gradient clipping norm; 0: none")
    lr_schedule: str = knob("step", "step (x0.1 at lr_drop) or cosine")
    lr_drop: int = knob(40, "epoch of the step drop")
    warmup_steps: int = knob(0, "steps of linear learning-rate warm-up")
    # Hungarian matching costs and loss weights, as in DETR
    set_cost_class: float = knob(1.0, "matching cost weight of the class probability")
    set_cost_bbox: float = knob(5.0, "matching cost weight of the L1 box distance")
    set_cost_giou: float = knob(2.0, "matching cost weight of the GIoU")
    bbox_loss_coef: float = knob(5.0, "loss weight of the L1 box loss")
    giou_loss_coef: float = knob(2.0, "loss weight of the GIoU loss")
    eos_coef: float = knob(0.1, "class weight of no-object")
    cls_loss_coef: float = knob(1.0, "loss weight of the classification loss (Conditional DETR: 2)")
    class_loss: str = knob("ce", "ce as in DETR, balanced (Cui et al.) or focal (Lin et al.), chapter 8; "
                                 "sigmoid_focal for model.class_head=sigmoid (Conditional DETR)")
    balanced_beta: float = knob(0.999, "balanced: the effective number of n objects is (1 - beta^n) / (1 - beta)")
    focal_gamma: float = knob(2.0, "focal, sigmoid_focal: a prediction's loss is scaled by (1 - p_true)^gamma")
    focal_alpha: float = knob(0.25, "sigmoid_focal: weight of a class's positive term, 1 - alpha of its negative one")
    amp: str = knob("off", "mixed precision: off, auto (bf16 where the device has it, else fp16 on a GPU), bf16, fp16")
    device: str = knob("auto", "auto (cuda when present, else cpu), cpu, cuda, cuda:N or mps")
    seed: int = knob(42, "training seed")
    eval_every: int = knob(1, "epochs between evaluations")
    keep_last: int = knob(2, "checkpoints kept besides the best one")
    checkpoint_every: int = knob(0, "also checkpoint every this many steps, mid-epoch; 0: at epoch ends only")
    init_checkpoint: str = knob("", "official DETR weights to start from (path or URL)")

    def __post_init__(self):
        check_fields(self, "train")

    def steps_per_epoch(self, images: int, processes: int = 1) -> int:
        """Optimizer steps in an epoch of ``images`` (at least one): the last incomplete batch is dropped."""
        return max(1, images // (self.batch_size * processes) // self.grad_accum_steps)

    def total_steps(self, images: int, processes: int = 1) -> int:
        """Optimizer steps of a whole run: ``max_steps``, else every epoch's."""
        return self.max_steps or self.epochs * self.steps_per_epoch(images, processes)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
# settings that only bound or place a run, not its weights: they stay out of the run's identity (Config.key)
PLACEMENT = frozenset({"data.download", "data.num_workers", "train.device", "train.max_minutes", "train.eval_every",
                       "train.checkpoint_every", "train.keep_last"})


@dataclass(frozen=True)
class Config:
    """A run's settings: its profile's name and the data, model and train sections."""

    profile: str = "full"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        if self.profile not in PROFILES:
            raise ConfigError(f"profile {self.profile!r} is not one of {', '.join(PROFILES)}")
        if (self.model.class_head == "sigmoid") != (self.train.class_loss == "sigmoid_focal"):
            raise ConfigError(f"model.class_head={self.model.class_head} with train.class_loss={self.train.class_loss}: "
                              "a sigmoid class head is trained with sigmoid_focal and only it; set both or neither")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """A config from :meth:`to_dict`'s form (JSON, a checkpoint), every key and value checked."""
        if not isinstance(d, dict):
            raise ConfigError(f"a config is a dict of sections {', '.join(SECTIONS)}, not {type(d).__name__}")
        for key in d:
            if key != "profile" and key not in SECTIONS:
                raise ConfigError(f"{key} is not a config section: a config holds profile, {', '.join(SECTIONS)}")
        kwargs = {}
        for name, klass in SECTIONS.items():
            values = d.get(name, {})
            if not isinstance(values, dict):
                raise ConfigError(f"config section {name} must be a dict of fields, not {type(values).__name__}")
            for key in values:
                if key not in field_types(klass):
                    raise ConfigError(unknown_field(f"{name}.{key}"))
            kwargs[name] = klass(**values)
        return cls(profile=d.get("profile", "full"), **kwargs)

    def replace(self, **changes) -> "Config":
        """A copy with dotted fields changed: ``cfg.replace(**{"model.dec_layers": 4})``."""
        d = self.to_dict()
        for key, value in changes.items():
            section, _, name = key.rpartition(".")
            target = d.get(section) if section else d
            if not isinstance(target, dict) or name not in target:
                raise ConfigError(unknown_field(key))
            target[name] = value
        return Config.from_dict(d)

    def key(self) -> str:
        """A short hash of the settings that make a run's weights, which names (and reuses) its run
        folder: not those in :data:`PLACEMENT`, so raising the time cap continues a run."""
        d = self.to_dict()
        for name in PLACEMENT:
            section, field_name = name.split(".")
            del d[section][field_name]
        return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:10]

    def describe(self) -> str:
        """The settings in one line, as a run prints them."""
        m, t = self.model, self.train
        data = self.data.root or f"toy VOC ({self.data.toy_train} train / {self.data.toy_val} val)"
        length = f"{t.max_steps} steps" if t.max_steps else f"{t.epochs} epochs"
        return (f"profile {self.profile}: {m.backbone} d{m.hidden_dim} {m.enc_layers}+{m.dec_layers} layers, "
                f"{m.num_queries} queries, dn_groups {m.dn_groups}; data {data}; "
                f"batch {t.batch_size}, lr {t.lr:g}, amp {t.amp}, {length}")


# --- checking values ------------------------------------------------------------------------------
# Every field is checked against its type annotation when a config is made; numbers must also be finite and >= 0
# unless RANGES says otherwise (for a tuple: each element), and a tuple needs at least one element. The upper
# bounds keep a damaged or hostile config (a checkpoint's) from allocating more than any DETR needs.

RANGES = {  # interval notation, "inf" for no bound
    "data.toy_image_size": "[64, 4096]", "data.toy_max_objects": "[1, 100]", "data.toy_clutter": "[0, 100]",
    "data.train_scales": "[1, 8192]", "data.max_size": "[1, 8192]", "data.val_size": "[1, 8192]",
    "data.repeat_factor_t": "[0, 1]",
    "model.hidden_dim": "[1, 8192]", "model.nheads": "[1, 256]", "model.enc_layers": "[0, 64]",
    "model.dec_layers": "[1, 64]", "model.dim_feedforward": "[1, 65536]", "model.dropout": "[0, 1)",
    "model.num_queries": "[1, 10000]", "model.num_classes": "[1, 100000]", "model.backbone_stages": "[1, 4]",
    "model.frozen_stages": "[0, 4]", "model.dn_groups": "[0, 1000]", "model.dn_label_noise": "[0, 1]",
    "model.dn_box_noise": "[0, 1)",
    "train.epochs": "[1, inf)", "train.batch_size": "[1, inf)", "train.grad_accum_steps": "[1, inf)",
    "train.lr": "(0, inf)", "train.eval_every": "[1, inf)", "train.eos_coef": "[0, 1]",
    "train.balanced_beta": "[0, 1)", "train.focal_alpha": "[0, 1]", "train.seed": "[0, 4294967295]",
}
CHOICES = {  # the model's part names are the registry's (detrlib.model.registry.check)
    "train.lr_schedule": ("step", "cosine"),
    "model.class_head": ("softmax", "sigmoid"),
    "train.class_loss": ("ce", "balanced", "focal", "sigmoid_focal"),
    "train.amp": ("off", "auto", "bf16", "fp16"),
}
# a set is names, never paths: it stays inside the data root, and so do the split files derived from it
SET_PATTERN = r"(?!\.\.?(:|$))[^:\s/\\]+(:(?!\.\.?$)[^:\s/\\]+)?"
PATTERNS = {  # regular expression a text must match, and what it means
    "data.train_sets": (SET_PATTERN, "YEAR:split, e.g. VOC2007:trainval, or a split name (names, not paths)"),
    "data.val_sets": (SET_PATTERN, "YEAR:split, e.g. VOC2007:test, or a split name (names, not paths)"),
    "data.longtail": (r"((exp|step)[1-9]\d*(\.\d+)?)?",
                      "empty, or exp<R> or step<R> with R >= 1 the head-to-tail ratio, e.g. exp50"),
    "train.device": (r"auto|cpu|mps|(cuda|xpu)(:\d+)?", "auto, cpu, cuda, cuda:N or mps"),
}


@functools.cache
def field_types(klass) -> dict[str, type]:
    """The resolved type annotation of each field of a config dataclass."""
    return typing.get_type_hints(klass)


def _check_number(key: str, value) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value}")
    interval = RANGES.get(key, "[0, inf)")
    low, high = (float(x) for x in interval[1:-1].split(","))
    open_low, open_high = interval[0] == "(", interval[-1] == ")"
    if value < low or value > high or (open_low and value == low) or (open_high and value == high):
        bound = f"{'greater than' if open_low else 'at least'} {low:g}" if math.isinf(high) else f"in {interval}"
        raise ConfigError(f"{key} must be {bound}, got {value!r}")


def _checked(key: str, value, kind):
    """``value`` as the type ``kind`` (a list becomes a tuple, an int a float), or a ConfigError."""
    if typing.get_origin(kind) is tuple:
        element = typing.get_args(kind)[0]
        items = tuple(value) if isinstance(value, (list, tuple)) else (value,)  # one value: a 1-tuple
        if not items:
            raise ConfigError(f"{key} needs at least one value")
        return tuple(_checked(key, v, element) for v in items)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if kind is int:
        whole = isinstance(value, int) or isinstance(value, float) and value.is_integer()  # inf and nan are not
        if isinstance(value, bool) or not whole:
            raise ConfigError(f"{key} must be a whole number, got {value!r}")
        _check_number(key, value)
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        _check_number(key, float(value))
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be text, got {value!r}")
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"{key} must be one of {', '.join(CHOICES[key])}, got {value!r}")
    if key in PATTERNS and not re.fullmatch(PATTERNS[key][0], value):
        raise ConfigError(f"{key} must be {PATTERNS[key][1]}, got {value!r}")
    return value


def check_value(key: str, value):
    """``value`` checked (and normalised) as the config field ``key`` (``"train.epochs"``)."""
    section, _, name = key.partition(".")
    kind = field_types(SECTIONS[section]).get(name) if section in SECTIONS else None
    if kind is None:
        raise ConfigError(unknown_field(key))
    return _checked(key, value, kind)


def check_fields(section, name: str) -> None:
    """Check (and normalise: lists to tuples, ints to floats) every field of a config section."""
    for field_name, kind in field_types(type(section)).items():
        object.__setattr__(section, field_name, _checked(f"{name}.{field_name}", getattr(section, field_name), kind))
    if name == "model":
        m = section
        if m.hidden_dim % m.nheads:
            raise ConfigError(f"model.hidden_dim ({m.hidden_dim}) must be divisible by model.nheads ({m.nheads})")
        if m.dn_groups and m.hidden_dim % 8:
            raise ConfigError(f"model.hidden_dim ({m.hidden_dim}) must be divisible by 8 for denoising "
                              "(model.dn_groups > 0), which sine-encodes the 4 box coordinates")
        if m.dilation and (m.backbone_stages != 4 or m.backbone not in ("resnet50", "resnet101")):
            raise ConfigError("model.dilation dilates layer4 of a bottleneck ResNet: it needs "
                              "model.backbone_stages=4 and model.backbone resnet50 or resnet101")


def unknown_field(key: str) -> str:
    """The message for a config key that does not exist, with the nearest existing one."""
    names = [f"{s}.{f}" for s, klass in SECTIONS.items() for f in field_types(klass)]
    bare = key.rpartition(".")[2]
    initials = "".join(word[:1] for word in bare.split("_"))  # learning_rate -> lr
    near = ([n for n in names if n.endswith("." + bare)] or [n for n in names if n.endswith("." + initials)]
            or difflib.get_close_matches(key, names, n=1, cutoff=0.6))
    hint = f" (did you mean {near[0]}?)" if near else ""
    return f"{key} is not a config field{hint}; the fields are listed in detrlib/config.py"


def parse_setting(item: str) -> tuple[str, object]:
    """``"SECTION.FIELD=VALUE"`` (``--set``) as ``(key, value)``: the value is read as JSON
    (``3``, ``1e-4``, ``true``, ``[96, 128]``, ``"text"``), except that a text field takes what is
    not a JSON text or list as it is (``data.root=2007``); :class:`Config` checks the value."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {item}: expected SECTION.FIELD=VALUE, e.g. --set train.lr_drop=30")
    section, _, name = key.partition(".")
    kind = field_types(SECTIONS[section]).get(name) if section in SECTIONS else None
    if kind is None:
        raise ConfigError(unknown_field(key))
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return key, text  # not JSON: text, or a mistake the check names
    if (kind is str or typing.get_args(kind) == (str, ...)) and not isinstance(value, (str, list)):
        return key, text
    return key, value


def _full() -> Config:
    """The reference project's recipe: DETR-R50 with 6 encoder and 4 decoder layers and 50 queries,
    fine-tuned from the official COCO checkpoint on the long-tailed VOC 07+12 with denoising (5
    groups) and mixed precision, for 50 epochs."""
    return Config(
        profile="full",
        data=DataConfig(root="voc", download=True, longtail="exp50"),
        model=ModelConfig(num_classes=20, dec_layers=4, num_queries=50, dn_groups=5),
        train=TrainConfig(
            epochs=50, lr_drop=40, batch_size=4, amp="auto", checkpoint_every=500,
            init_checkpoint="https://dl.fbaipublicfiles.com/detr/detr-r50-e632da11.pth",
        ),
    )


GPU_STEPS = 1200  # one run of a Colab session on a T4 (detrlib.budget estimates its minutes)
BOOK_CELL_SECONDS = 1200  # the built book's limit on one cell (scripts/book_execution.py hands it to myst-nb)
# The quick profile's wall-clock cap: a run it stops (on a busy CPU) still ends, its final evaluation
# included, inside one cell of the book (tests/test_book_build.py checks the room left).
QUICK_MAX_MINUTES = 15.0


def _gpu() -> Config:
    """The full profile's model and start, at the size of one Colab session on a T4 (:mod:`detrlib.budget`): VOC
    2007 trainval only (long-tailed), images resized to 480-640 pixels (DETR: 480-800), a fixed 500-image subset of
    VOC 2007 test for evaluations, a cosine schedule over a step budget; ``max_minutes`` stops a slower GPU cleanly."""
    return _full().replace(**{
        "profile": "gpu",
        "data.train_sets": ("VOC2007:trainval",), "data.val_sets": ("VOC2007:test",), "data.val_subset": 500,
        "data.train_scales": (480, 512, 544, 576, 608, 640), "data.max_size": 1000, "data.val_size": 640,
        "train.max_steps": GPU_STEPS, "train.max_minutes": 20.0, "train.lr_schedule": "cosine",
        "train.warmup_steps": 100, "train.checkpoint_every": 500,
    })


def _quick() -> Config:
    """The book's recipe at a CPU's scale, tuned to learn the toy VOC in about three minutes of training on 2 cores:
    a ResNet-18 cut after its third stage and trained from scratch, a high learning rate for the whole network, a
    drop two epochs before the end. Batches of 16 rather than 8: a CPU computes an image of a batch of 16 about a
    fifth cheaper, and 9 epochs of them learn as much as 8 epochs of batches of 8, or more, in less time. On a slow or
    busy CPU ``max_minutes`` ends a run cleanly before the book's limit on a cell would kill it."""
    return Config(
        profile="quick",
        data=DataConfig(
            root="", train_sets=("VOCtoy:train",), val_sets=("VOCtoy:val",), toy_train=2000, toy_val=300,
            train_scales=(128,), max_size=128, val_size=128, random_crop=False, num_workers=0,
        ),
        model=ModelConfig(
            backbone="resnet18", backbone_stages=3, frozen_bn=False, frozen_stages=0, hidden_dim=128, nheads=8,
            enc_layers=2, dec_layers=2, dim_feedforward=512, dropout=0.0, num_queries=20, num_classes=12, dn_groups=5,
        ),
        train=TrainConfig(
            epochs=9, batch_size=16, lr=5e-4, lr_backbone=5e-4, lr_drop=7, warmup_steps=100, eval_every=1,
            max_minutes=QUICK_MAX_MINUTES,
            amp="auto",  # bf16 on CPUs that compute in it: the same curves in less time (chapter 7)
        ),
    )


def _smoke() -> Config:
    return _quick().replace(**{
        "profile": "smoke",
        "data.toy_train": 24, "data.toy_val": 8, "data.train_scales": (64,),
        "data.max_size": 64, "data.val_size": 64,
        "model.hidden_dim": 32, "model.dim_feedforward": 64, "model.enc_layers": 1,
        "model.dec_layers": 2, "model.nheads": 4, "model.num_queries": 8,
        "train.epochs": 1, "train.max_steps": 3, "train.batch_size": 4, "train.amp": "off",
    })


_BUILDERS = {"smoke": _smoke, "quick": _quick, "gpu": _gpu, "full": _full}
PROFILES = tuple(_BUILDERS)


def has_cuda() -> bool:
    """Whether a CUDA GPU is visible. detrlib asks here only, so that tests can fake a GPU (with
    ``torch.cuda``'s device properties) without torch itself trying to use it."""
    import torch

    return torch.cuda.is_available()


# The one order in which settings are settled (the README and ``train --help`` quote it).
ORDER = ("Settings are settled in this order, each step changing the one before: the profile (--profile, "
         "else DETRLIB_PROFILE, else the chapter's PROFILE, else gpu on a CUDA GPU and quick otherwise); "
         "DETRLIB_SET, a JSON object of fields such as '{\"train.max_steps\": 300}'; then --set SECTION.FIELD=VALUE "
         "and the flags, which must agree where they name the same field. A data root given on a profile that "
         "trains on the generated toy VOC reads VOC 2007+2012 trainval and validates on VOC 2007 test.")


def resolve_profile(default: str | None = None, named: str | None = None) -> str:
    """The profile :data:`ORDER` picks: ``named`` (a command's ``--profile``), else ``DETRLIB_PROFILE``, else
    ``default`` (a chapter's ``PROFILE``), else gpu on a CUDA GPU and quick otherwise."""
    chosen = named or os.environ.get("DETRLIB_PROFILE") or default or ("gpu" if has_cuda() else "quick")
    if chosen not in PROFILES:
        raise ConfigError(f"unknown profile {chosen!r}: choose one of {', '.join(PROFILES)}"
                          + ("" if named else " (check the DETRLIB_PROFILE environment variable)"))
    return chosen


def settle(default: str | None = None, named: str | None = None, sets: list[str] | tuple = (),
           flags: dict | None = None) -> Config:
    """The settings, settled once in :data:`ORDER`: the profile (:func:`resolve_profile`), ``DETRLIB_SET``, the
    ``--set`` items (``"SECTION.FIELD=VALUE"``) and ``flags`` (``{"train.lr": ("--lr", 1e-4)}``: field -> the flag
    that gave it, and its value). Each value is checked once, by the :class:`Config` it makes."""
    cfg = _with_environment(profile_settings(resolve_profile(default, named)))
    flags = {key: given for key, given in (flags or {}).items() if given[1] is not None}
    changes = {key: tuple(value) if isinstance(value, list) else value for key, (_, value) in flags.items()}
    for item in sets:
        key, value = parse_setting(item)
        if key in flags and check_value(key, value) != check_value(key, changes[key]):
            flag, given = flags[key]
            shown = " ".join(map(str, given)) if isinstance(given, (list, tuple)) else given
            raise ConfigError(f"{flag} {shown} and --set {item} disagree: give {key} once")
        changes[key] = value
    if changes.get("data.root") and cfg.data.toy_train:  # a given folder replaces the generated toy VOC
        changes.setdefault("data.train_sets", ("VOC2007:trainval", "VOC2012:trainval"))
        changes.setdefault("data.val_sets", ("VOC2007:test",))
    cfg = cfg.replace(**changes)
    # the registry is the one list of part names (backbone, layer types, ...); detrlib.model's parts register there
    from detrlib.model.registry import check

    check(cfg.model)
    return cfg


def check_device(cfg: Config) -> None:
    """Refuse a GPU profile (DETR-R50) on a machine without CUDA, unless ``train.device`` names the CPU."""
    if cfg.profile in GPU_PROFILES and cfg.train.device == "auto" and not has_cuda():
        raise ConfigError(f"the {cfg.profile} profile trains DETR-R50 and needs a CUDA GPU, and none is visible: "
                          "use the quick profile on a CPU (--profile quick; in a chapter, PROFILE = \"quick\"), "
                          "or set train.device=cpu to run it on the CPU anyway (days, not minutes)")


def get_profile(name: str | None = None) -> Config:
    """A chapter's settings: :func:`settle` with ``name`` (its ``PROFILE``) as the default profile."""
    return settle(default=name)


def _with_environment(cfg: Config) -> Config:
    """``cfg`` changed by ``DETRLIB_SET`` when set: a JSON object of dotted fields, e.g.
    ``DETRLIB_SET='{"train.max_steps": 300}'``, which runs every chapter and command with those changes."""
    changes = os.environ.get("DETRLIB_SET")
    if not changes:
        return cfg
    try:
        changes = json.loads(changes)
    except json.JSONDecodeError as err:
        raise ConfigError(f"DETRLIB_SET is not a JSON object ({err}): write it as '{{\"train.max_steps\": 300}}'") from None
    if not isinstance(changes, dict):
        raise ConfigError("DETRLIB_SET must be a JSON object of dotted fields, e.g. '{\"train.max_steps\": 300}'")
    try:
        return cfg.replace(**{k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()})
    except ConfigError as err:
        raise ConfigError(f"DETRLIB_SET: {err}") from None


def profile_settings(name: str) -> Config:
    """The settings of the profile ``name`` itself, whatever ``DETRLIB_PROFILE`` and ``DETRLIB_SET``
    say: to show another profile's recipe (:func:`settle` chooses the settings to run)."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}")
    return _BUILDERS[name]()


def workdir() -> Path:
    """Where data and downloads live: ``DETRLIB_HOME``, else ``~/.cache/detrlib`` (local disk,
    also on Colab, where unpacking VOC onto Drive would be slow)."""
    path = Path(os.environ.get("DETRLIB_HOME") or Path.home() / ".cache" / "detrlib")
    path.mkdir(parents=True, exist_ok=True)
    return path


def repository_url(relative: str) -> str:
    """Where the repository serves one of its files (GitHub's raw files, on :data:`BRANCH`)."""
    return f"{REPOSITORY.replace('github.com', 'raw.githubusercontent.com')}/{BRANCH}/{relative}"


def runs_dir() -> Path:
    """Where training runs (checkpoints, metrics) live: ``DETRLIB_RUNS``, else ``workdir()/runs``
    (on Colab, :func:`detrlib.colab.mount_drive` points it at Google Drive)."""
    path = Path(os.environ.get("DETRLIB_RUNS") or workdir() / "runs")
    path.mkdir(parents=True, exist_ok=True)
    return path


def downloads_dir() -> Path:
    """Where downloaded archives and checkpoints are kept: ``DETRLIB_DOWNLOADS``, else
    ``workdir()/downloads`` (on Colab, Google Drive once mounted, so that a new session unpacks VOC
    from there instead of downloading it again). Unpacked data stays in :func:`workdir`."""
    return Path(os.environ.get("DETRLIB_DOWNLOADS") or workdir() / "downloads")


def pick_device(name: str = "auto"):
    """``"auto"`` means CUDA when present, else the CPU; a device this machine lacks is a ConfigError."""
    import torch

    if name == "auto":
        name = "cuda" if has_cuda() else "cpu"
    device = torch.device(name)
    gpus = torch.cuda.device_count() if has_cuda() else 0
    missing = ((device.type == "cuda" and (device.index or 0) >= gpus)
               or (device.type == "mps" and not torch.backends.mps.is_available()))
    if missing:
        have = f"{gpus} CUDA GPU{'s' if gpus != 1 else ''}" if device.type == "cuda" else "no MPS device"
        raise ConfigError(f"train.device is {name} but this machine has {have}: use cpu or auto (--device cpu)")
    return device


def device_name(device) -> str:
    """A device in a few words: the GPU's name, or ``cpu (N threads)``."""
    import torch

    threads = torch.get_num_threads()
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({threads} thread{'s' * (threads > 1)})"
