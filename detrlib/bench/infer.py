"""``python -m detrlib bench infer``: inference seconds per image, timed the careful way.

Each row runs a few untimed warm-up calls first (memory allocation, kernel choice, and compilation with
``--compile``), then ``--repeats`` timed calls, and reports the median call divided by the batch size; on a GPU each
call is timed between two CUDA events and waited for (:func:`~detrlib.bench.seconds`). The configurations take turns
(:func:`~detrlib.bench.take_turns`), so a busy moment on a shared machine hurts them alike. Models have random
weights: speed does not depend on them.

Configurations are ``DECxQUERIES`` (``4x50``: 4 decoder layers, 50 object queries) of a profile's model (``full``:
DETR-R50 for VOC's 20 classes). The ``vs first`` column is the speed-up over the first configuration at the same
input size, batch and precision.
"""
from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING

from detrlib.bench import benchmark, take_turns
from detrlib.errors import ConfigError

if TYPE_CHECKING:
    import torch

SEED_PAIR = ("6x100", "4x50")  # the seed's pruned decoder against DETR's own
TARGET = 1.2  # the speed-up the seed's pruned decoder should give


def parse_config(text: str) -> tuple[int, int]:
    """``"4x50"`` -> (4 decoder layers, 50 queries)."""
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match or min(map(int, match.groups())) < 1:
        raise ConfigError(f"a configuration is DECODER_LAYERSxQUERIES, e.g. 4x50, not {text!r}")
    return int(match[1]), int(match[2])


def inference_job(model, size: int, batch: int = 1, dtype: torch.dtype | None = None,
                  device: torch.device | None = None):
    """A callable running ``model`` on a batch of ``batch`` random ``size``² images: eval mode, no gradients, under
    autocast to ``dtype`` when given."""
    import torch

    from detrlib.precision import autocast

    device = device or next(model.parameters()).device
    images = torch.randn(batch, 3, size, size, device=device)
    mask = torch.zeros(batch, size, size, dtype=torch.bool, device=device)
    model.eval()

    def call():
        with torch.no_grad(), autocast(device, dtype):
            model(images, mask)

    return call


def inference_seconds_per_image(model, size: int, batch: int = 1, dtype: torch.dtype | None = None,
                                device: torch.device | None = None, repeats: int = 20, warmup: int = 3) -> float:
    """Median inference seconds per image of ``model`` (see :func:`inference_job`) over ``repeats`` calls after
    ``warmup`` untimed ones; on a GPU timed with CUDA events."""
    device = device or next(model.parameters()).device
    job = inference_job(model, size, batch, dtype, device)
    return take_turns({"job": job}, repeats, warmup, device)["job"] / batch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="full", choices=["smoke", "quick", "full"],
                        help="whose model to time (default full: DETR-R50, VOC's 20 classes)")
    parser.add_argument("--configs", nargs="+", default=list(SEED_PAIR), metavar="DECxQ",
                        help="decoder layers x queries (default: 6x100 4x50)")
    parser.add_argument("--sizes", type=int, nargs="+", help="square input sizes (default: the profile's val_size)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    parser.add_argument("--precision", nargs="+", default=["fp32", "amp"], choices=["fp32", "amp", "bf16", "fp16"],
                        help="fp32, amp (bf16 where supported, else fp16), or a dtype (default fp32 amp)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per row, median taken (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 keeps torch's default")


@benchmark("infer", "inference s/image: warm-up, CUDA-event timing on a GPU, median of many runs", add_arguments)
def run(args: argparse.Namespace) -> list[dict]:
    import torch

    from detrlib.config import device_name, get_profile, pick_device
    from detrlib.precision import precision as choose
    from detrlib.model import build_model, count_parameters

    device = pick_device(args.device)
    cfg = get_profile(args.profile)
    configs = [parse_config(c) for c in args.configs]
    sizes = args.sizes or [cfg.data.val_size]
    print(f"{args.profile} profile model ({cfg.model.backbone}, {cfg.model.enc_layers} encoder layers), "
          f"{device_name(device)}, torch {torch.__version__}; median of {args.repeats} calls after {args.warmup} warm-up calls")
    rows = []
    for compiled in (False, True) if args.compile else (False,):
        models = {}
        for dec, queries in configs:
            torch.manual_seed(0)
            model_cfg = cfg.replace(**{"model.dec_layers": dec, "model.num_queries": queries}).model
            models[(dec, queries)] = build_model(model_cfg, compile=compiled).to(device).eval()
        for size in sizes:
            for batch in args.batches:
                for precision in args.precision:
                    dtype = choose({"amp": "auto", "fp32": "off"}.get(precision, precision), device).dtype
                    label = precision if precision != "amp" else f"amp ({str(dtype).removeprefix('torch.')})"
                    jobs = {shape: inference_job(model, size, batch, dtype, device) for shape, model in models.items()}
                    times = take_turns(jobs, args.repeats, args.warmup, device)  # configurations alternate
                    first = times[configs[0]] / batch
                    for (dec, queries), model in models.items():
                        s = times[(dec, queries)] / batch
                        rows.append({"decoder x queries": f"{dec}x{queries}",
                                     "params": count_parameters(model)[-1]["total"], "size": size,
                                     "batch": batch, "precision": label, "compile": "yes" if compiled else "no",
                                     "s/image": s, "vs first": first / s})
    _report_target(rows)
    return rows


def _report_target(rows: list[dict]) -> None:
    """The seed's pruned decoder against DETR's own, where both were timed."""
    times = {(r["decoder x queries"], r["size"], r["batch"], r["precision"], r["compile"]): r["s/image"] for r in rows}
    for (config, *rest), s in times.items():
        if config == SEED_PAIR[0] and (SEED_PAIR[1], *rest) in times:
            ratio = s / times[(SEED_PAIR[1], *rest)]
            print(f"{SEED_PAIR[1]} vs {SEED_PAIR[0]} at {rest[0]}² batch {rest[1]} {rest[2]}"
                  f"{' compiled' if rest[3] == 'yes' else ''}: {ratio:.2f}x faster "
                  f"(target >= {TARGET}x: {'met' if ratio >= TARGET else 'MISSED'})")
