"""``python -m detrlib bench step [--profile quick full] [--dn] [--amp] [--busy N]``: seconds per training step on
the CPU.

A step is everything the engine does per batch: forward (with the targets, for denoising), Hungarian matching, the
set loss with auxiliary losses at every decoder layer, backward, gradient clipping and an AdamW update, on random
images and boxes. ``full`` is DETR-R50 as the paper trains it (91 classes, 6 + 6 layers, 100 queries) at batch 2 and
512²; ``quick`` is the quick profile's model at its own batch and image size. Each runs next to Hugging Face's
``DetrForObjectDetection`` of the same shape doing the same work, when it is installed. ``--dn`` reports the
denoising queries' overhead; ``--busy N`` times every step alone and next to N spinning processes in each turn and
reports busy / quiet. Each number is the median of ``--repeats`` steps after a warm-up, the jobs taking turns.
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from detrlib.bench import benchmark, hf_detr, random_batch, take_turns_quiet_and_busy

if TYPE_CHECKING:
    import torch


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", nargs="+", choices=["quick", "full"], default=["quick", "full"],
                        help="quick: the quick profile's model and batch; full: DETR-R50, batch 2, 512² "
                             "(default: both)")
    parser.add_argument("--batch", type=int, help="batch size (default: 2 for full, the profile's for quick)")
    parser.add_argument("--size", type=int, help="square image size (default: 512 for full, the profile's for quick)")
    parser.add_argument("--objects", type=int, nargs="+", default=[2, 4],
                        help="objects per image, cycled over the batch (default 2 4)")
    parser.add_argument("--dn", action="store_true", help="also time the step with denoising queries")
    parser.add_argument("--dn-groups", type=int, default=5, help="denoising groups with --dn (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per row (the median is shown)")
    parser.add_argument("--no-hf", action="store_true", help="skip Hugging Face even when installed")
    parser.add_argument("--amp", action="store_true",
                        help="every step under autocast, in the precision a CPU run with train.amp=auto trains in "
                             "(bf16 on CPUs that compute in it, else fp32), Hugging Face's too")


def detrlib_step(cfg, images, mask, targets, dtype: torch.dtype | None = None):
    """One training step of a fresh model built from ``cfg``, as :func:`detrlib.engine.train_one_epoch` takes it, on
    the device of ``images``: the model under autocast to ``dtype`` (``None``: fp32), matching and losses in fp32, a
    ``GradScaler`` for fp16. The returned callable runs one step on this batch, or on ``(images, mask, targets)``
    given to it, and returns the loss as a float."""
    import torch
    from torch import nn

    from detrlib.criterion import build_criterion
    from detrlib.engine import make_optimizer
    from detrlib.precision import autocast
    from detrlib.model import build_model

    device = images.device
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device).train()
    criterion = build_criterion(cfg).to(device)
    optimizer = make_optimizer(model, cfg.train)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None

    def step(images=images, mask=mask, targets=targets) -> float:
        with autocast(device, dtype):
            outputs = model(images, mask, targets=targets)
        loss = criterion.total(criterion(outputs, targets))
        optimizer.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_max_norm)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        return loss.item()

    return step


def hf_config(model_cfg) -> dict:
    """``DetrConfig`` arguments for Hugging Face's DETR of the same shape as ``model_cfg``: its timm ResNet cut after
    the same stage, the same widths, layers, queries and classes."""
    m = model_cfg
    backbone = {"model_type": "timm_backbone", "backbone": m.backbone, "num_channels": 3, "features_only": True,
                "use_pretrained_backbone": False, "out_indices": list(range(1, m.backbone_stages + 1))}
    return {"backbone_config": backbone, "num_labels": m.num_classes, "d_model": m.hidden_dim,
            "encoder_layers": m.enc_layers, "decoder_layers": m.dec_layers, "encoder_ffn_dim": m.dim_feedforward,
            "decoder_ffn_dim": m.dim_feedforward, "encoder_attention_heads": m.nheads,
            "decoder_attention_heads": m.nheads, "num_queries": m.num_queries, "dropout": m.dropout,
            "auxiliary_loss": m.aux_loss}


def hf_step(model, images, targets, clip: float = 0.1, dtype: torch.dtype | None = None):
    """One training step of Hugging Face's DETR, with the fused AdamW its Trainer uses by default, its forward pass
    under autocast to ``dtype`` (``None``: fp32)."""
    import torch
    from torch import nn

    from detrlib.precision import autocast

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4, fused=True)
    labels = [{"class_labels": t["labels"], "boxes": t["boxes"]} for t in targets]
    model.train()

    def step():
        with autocast(images.device, dtype):
            loss = model(pixel_values=images, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()

    return step


def _profile(name: str, args: argparse.Namespace):
    from detrlib.config import Config, ModelConfig, get_profile

    if name == "full":
        return Config(model=ModelConfig(backbone="resnet50", num_classes=91)), args.batch or 2, args.size or 512
    cfg = get_profile("quick")
    return cfg, args.batch or cfg.train.batch_size, args.size or max(cfg.data.train_scales)


@benchmark("step", add_arguments=_arguments, measures_busy=True,
           help="seconds per training step (forward, matching, loss, backward, AdamW) on CPU; detrlib vs "
                "Hugging Face, --dn for denoising's overhead, --busy N next to N spinning processes")
def run(args: argparse.Namespace) -> list[dict]:
    import torch

    from detrlib.precision import precision as choose

    dtype = choose("auto", "cpu").dtype if args.amp else None
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
    print(f"{torch.get_num_threads()} torch threads, {precision}, median of {args.repeats} steps"
          + (f", quiet and next to {args.busy} spinning processes, turn by turn" if args.busy else ""))
    rows = []
    for profile in args.profile:
        cfg, batch, size = _profile(profile, args)
        images, mask, targets = random_batch(batch, size, cfg.model.num_classes, args.objects)
        groups = [0] + ([args.dn_groups] if args.dn else [])
        jobs = {g: detrlib_step(cfg.replace(**{"model.dn_groups": g}), images, mask, targets, dtype) for g in groups}
        hf, why = (None, "") if args.no_hf else hf_detr(**hf_config(cfg.model))
        if why:
            print(why)
        if hf is not None:
            jobs["hf"] = hf_step(hf, images, targets, cfg.train.clip_max_norm, dtype)
        quiet, busy = take_turns_quiet_and_busy(jobs, args.repeats, args.busy)

        pad = max(args.objects[i % len(args.objects)] for i in range(batch))
        name = f"{cfg.model.backbone} d{cfg.model.hidden_dim} {cfg.model.enc_layers}+{cfg.model.dec_layers} b{batch} {size}²"
        for g in groups:
            row = {"model": name, "precision": precision, "dn_groups": g, "queries": cfg.model.num_queries + g * pad,
                   "detrlib s/step": quiet[g]}
            if busy:
                row["busy s/step"] = busy[g]
                row["busy/quiet"] = busy[g] / quiet[g]
            if g:
                row["dn overhead"] = f"{quiet[g] / quiet[0] - 1:+.1%}"
            elif "hf" in quiet:
                row["HF s/step"] = quiet["hf"]
                row["HF / detrlib"] = quiet["hf"] / quiet[0]
                if busy:
                    row["HF busy s/step"] = busy["hf"]
                    row["HF busy/quiet"] = busy["hf"] / quiet["hf"]
            rows.append(row)
    return rows
