"""Pruning a trained DETR: keep the first K decoder layers and N of the object queries.

No retraining from scratch is needed: the auxiliary losses train the shared class and box heads on *every* decoder
layer's output, so layer K's output is already a trained prediction, and the queries are a set, so any N of them
(the first, or those :func:`query_usage` finds most often matched on a validation set) still form a valid model. A
short fine-tune (:func:`finetune_config`) lets it adjust. The weights move by the rules of
:func:`~detrlib.checkpoint.load_official_checkpoint`, with the same report of every tensor.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from detrlib.checkpoint import LoadReport, atomic_save, fit_state_dict, load_official_checkpoint, load_trained, read_state_dict
from detrlib.config import Config, ModelConfig, runs_dir


GRID_LAYERS, GRID_QUERIES = (6, 4, 2), (100, 50, 25)  # the configurations chapter 6 compares
SEED = (4, 50)  # the seed's pruned decoder: 4 layers, 50 queries


def pruning_grid(cfg: Config) -> tuple[list[int], list[int]]:
    """Decoder layers and query counts to compare, largest first: the grid 6/4/2 x 100/50/25 scaled so that the
    seed's 4/50 become the profile's own model. The full profile's model is the seed's, so it gets the grid itself
    (6/100 is the COCO checkpoint's shape); the quick profile's smaller model gets a grid that a CPU can train."""
    m = cfg.model
    layers = sorted({max(1, round(n * m.dec_layers / SEED[0])) for n in GRID_LAYERS}, reverse=True)
    queries = sorted({max(1, round(n * m.num_queries / SEED[1])) for n in GRID_QUERIES}, reverse=True)
    return layers, queries


@dataclass
class Pruned:
    """A pruned model, its configuration, the source queries it kept and how its weights were loaded."""

    model: nn.Module
    config: Config | ModelConfig
    queries: list[int]
    report: LoadReport

    def __str__(self) -> str:
        m = self.config.model if isinstance(self.config, Config) else self.config
        return (f"pruned to {m.dec_layers} decoder layers and {m.num_queries} queries "
                f"(kept queries {self.queries})\n{self.report}")


@torch.no_grad()
def query_usage(model: nn.Module, loader, device: torch.device | None = None, dtype: torch.dtype | None = None,
                matcher=None) -> torch.Tensor:
    """How often each object query is matched to a ground-truth object over ``loader`` (a validation set) by the
    training's Hungarian matcher (default costs), a float ``[num_queries]``: a rarely picked query rarely detects."""
    from detrlib.engine import to_device
    from detrlib.precision import autocast
    from detrlib.matcher import HungarianMatcher

    device = device or next(model.parameters()).device
    matcher = matcher or HungarianMatcher()
    model.eval()
    counts = torch.zeros(model.num_queries)
    for batch in loader:
        images, mask, targets = to_device(*batch, device)
        with autocast(device, dtype):
            outputs = model(images, mask)
        for rows, _ in matcher(outputs, targets):
            counts += torch.bincount(rows, minlength=model.num_queries).float()
    return counts


def pick_queries(num_queries: int, keep: int, by: str = "first", usage: torch.Tensor | None = None) -> list[int]:
    """The ``keep`` queries to keep, in their original order: the first ones, or the most used (ties: lower index)."""
    if not 0 < keep <= num_queries:
        raise ValueError(f"num_queries must be between 1 and the model's {num_queries}, got {keep}")
    if by == "first":
        return list(range(keep))
    if by != "usage":
        raise ValueError(f"by must be 'first' or 'usage', not {by!r}")
    if usage is None or usage.shape != (num_queries,):
        raise ValueError(f"by='usage' needs the usage of all {num_queries} queries: pass a validation loader "
                         "(or usage=query_usage(model, loader))")
    order = sorted(range(num_queries), key=lambda q: (-float(usage[q]), q))
    return sorted(order[:keep])


def prune(source, dec_layers: int, num_queries: int, by: str = "first", loader=None,
          config: Config | ModelConfig | None = None, usage: torch.Tensor | None = None) -> Pruned:
    """A smaller copy of a trained DETR: its first ``dec_layers`` decoder layers and ``num_queries`` of its queries,
    the first ones (``by="first"``) or the most used on ``loader`` (``by="usage"``).

    ``source`` is a run folder or checkpoint (its configuration comes with it), or a model together with its
    ``config`` (a :class:`Config` or :class:`ModelConfig`). ``usage`` skips measuring it again. The source is left
    untouched; the pruned model is on the CPU, in eval mode.
    """
    from detrlib.model import build_model

    if isinstance(source, (str, Path)):
        model, config, _ = load_trained(source)
        name = str(source)
    elif config is None:
        raise ValueError("prune(model, ...) needs config=, the Config or ModelConfig the model was built "
                         "from (or pass a run folder or checkpoint instead of the model)")
    else:
        model, name = source, "the given model"
    model_cfg = config.model if isinstance(config, Config) else config
    if not 0 < dec_layers <= model_cfg.dec_layers:
        raise ValueError(f"dec_layers must be between 1 and the model's {model_cfg.dec_layers}, got {dec_layers}")
    if by == "usage" and usage is None:
        if loader is None:
            raise ValueError("by='usage' needs loader=, a validation loader to measure query usage on")
        usage = query_usage(model, loader)
    kept = pick_queries(model_cfg.num_queries, num_queries, by, usage)

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    rest = [q for q in range(model_cfg.num_queries) if q not in kept]
    state["query_embed.weight"] = state["query_embed.weight"][kept + rest]  # kept first: fit keeps the first N
    if isinstance(config, Config):
        new_config = config.replace(**{"model.dec_layers": dec_layers, "model.num_queries": num_queries})
        small_cfg = new_config.model
    else:
        small_cfg = new_config = replace(config, dec_layers=dec_layers, num_queries=num_queries)
    small = build_model(small_cfg)
    report = fit_state_dict(small, state, f"{name} ({model_cfg.dec_layers} decoder layers, "
                                          f"{model_cfg.num_queries} queries)")
    return Pruned(small.eval(), new_config, kept, report)


def save_pruned(pruned: Pruned, path: str | Path, classes=None) -> Path:
    """Write ``{"model", "config"}`` (and the source's ``classes`` when given): a checkpoint that ``eval``/``predict``
    read (needs a full :class:`Config`) and that a fine-tune starts from (``train.init_checkpoint``)."""
    if not isinstance(pruned.config, Config):
        raise ValueError("save_pruned needs a model pruned with a full Config (prune a run folder, or pass config=cfg)")
    extra = {"classes": list(classes)} if classes else {}
    return atomic_save({"model": pruned.model.state_dict(), "config": pruned.config.to_dict(),
                        "queries": pruned.queries, **extra}, Path(path))


def finetune_config(pruned_config: Config, init: str | Path, steps: int, lr_scale: float = 0.1) -> Config:
    """A short fine-tune of a pruned model: ``steps`` optimizer steps from its weights ``init``, no warm-up, constant
    learning rates both times ``lr_scale`` (DETR's rate after its step drop, where a trained model ends)."""
    t = pruned_config.train
    return pruned_config.replace(**{
        "train.init_checkpoint": str(init), "train.max_steps": steps, "train.warmup_steps": 0,
        "train.lr": t.lr * lr_scale, "train.lr_backbone": t.lr_backbone * lr_scale,
        "train.lr_schedule": "step", "train.lr_drop": t.epochs,  # the drop would come after the last step
    })


def coco_model(cfg: Config) -> tuple[nn.Module, Config, LoadReport]:
    """The official COCO checkpoint (``cfg.train.init_checkpoint``) whole, 6 decoder layers and 100 queries, as a
    detector of VOC's classes without any training: its class head keeps the rows of the 20 VOC classes
    (:data:`~detrlib.data.voc.VOC_IN_COCO`). What chapter 6 prunes on a GPU."""
    from detrlib.data.voc import VOC_IN_COCO
    from detrlib.model import build_model

    big = cfg.replace(**{"model.dec_layers": 6, "model.num_queries": 100, "model.dn_groups": 0,
                         "model.num_classes": len(VOC_IN_COCO)})
    model = build_model(big.model)
    report = load_official_checkpoint(model, cfg.train.init_checkpoint, class_rows=VOC_IN_COCO)
    return model.eval(), big, report


def usage_ordered_path(cfg: Config) -> Path:
    """Where :func:`write_usage_ordered` puts the COCO checkpoint with its queries reordered."""
    return runs_dir() / "pruned" / f"coco-queries-by-usage-{cfg.key()}.pth"


def write_usage_ordered(cfg: Config, usage: torch.Tensor) -> Path:
    """The official checkpoint of ``cfg.train.init_checkpoint`` with its queries reordered, most used first, in the
    official format: a run that starts from it with N queries keeps the N most used (loading keeps the first N)."""
    state, _ = read_state_dict(cfg.train.init_checkpoint)
    order = sorted(range(len(usage)), key=lambda q: (-float(usage[q]), q))
    state = {**state, "query_embed.weight": state["query_embed.weight"][order]}
    return atomic_save({"model": state}, usage_ordered_path(cfg))
