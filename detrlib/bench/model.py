"""``python -m detrlib bench model``: DETR-R50 on the CPU, detrlib next to Hugging Face.

Three jobs at each image size: a batched forward pass (eval, no gradients), a training step's
forward + backward (train mode) and single-image inference, all on random weights (speed does not
depend on them). Hugging Face ``transformers``' ``DetrForObjectDetection`` runs the same jobs when
it is installed (``pip install transformers timm``); detrlib never imports it otherwise. Each
number is the median of ``--repeats`` runs after a warm-up, the two libraries taking turns.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from detrlib.bench import benchmark


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 800], help="square image sizes")
    parser.add_argument("--batch", type=int, default=2, help="batch size of the forward/backward rows")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row (the median is shown)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the detrlib model")
    parser.add_argument("--no-hf", action="store_true", help="skip Hugging Face even when installed")


def _hf_model():
    """DetrForObjectDetection with COCO's 91 classes and random weights, or a reason it is missing."""
    try:
        import timm  # noqa: F401  (DetrConfig's default ResNet-50 backbone comes from timm)
        from transformers import DetrConfig, DetrForObjectDetection
    except ImportError as err:
        return None, f"Hugging Face rows skipped: {err.name} is not installed (pip install transformers timm)"
    return DetrForObjectDetection(DetrConfig(num_labels=91)), ""


def _loss(logits, boxes):
    return logits.float().logsumexp(-1).mean() + boxes.float().mean()


def _jobs(model, hf: bool, size: int, batch: int):
    """``name -> callable`` for one model; each callable runs one timed unit of work."""
    def run(x, train):
        model.train(train)
        if hf:
            out = model(pixel_values=x)
            return out.logits, out.pred_boxes
        out = model(x)
        return out["pred_logits"], out["pred_boxes"]

    xb = torch.randn(batch, 3, size, size)
    x1 = torch.randn(1, 3, size, size)

    def forward():
        with torch.no_grad():
            run(xb, False)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        _loss(*run(xb, True)).backward()

    def inference():
        with torch.no_grad():
            run(x1, False)

    return {f"forward b{batch} {size}²": forward, f"fwd+bwd b{batch} {size}²": forward_backward,
            f"inference s/img {size}²": inference}


def _median_seconds(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


@benchmark("model", add_arguments=_arguments,
           help="DETR-R50 on CPU: forward, forward+backward and inference seconds, detrlib vs Hugging Face")
def run(args: argparse.Namespace) -> list[dict]:
    from detrlib.config import ModelConfig
    from detrlib.model import build_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours = build_model(ModelConfig(backbone="resnet50", num_classes=91), compile=args.compile)
    theirs, why = (None, "Hugging Face rows skipped (--no-hf)") if args.no_hf else _hf_model()
    if why:
        print(why)

    rows = []
    for size in args.sizes:
        our_jobs = _jobs(ours, False, size, args.batch)
        their_jobs = _jobs(theirs, True, size, args.batch) if theirs is not None else {}
        for name, job in our_jobs.items():
            job()  # warm-up (and compilation)
            if name in their_jobs:
                their_jobs[name]()
            mine, hf = [], []
            for _ in range(args.repeats):  # take turns, so a busy moment hurts both alike
                mine += _median_seconds(job, 1)
                if name in their_jobs:
                    hf += _median_seconds(their_jobs[name], 1)
            row = {"job": name, "detrlib s": statistics.median(mine)}
            if hf:
                row["HF s"] = statistics.median(hf)
                row["HF / detrlib"] = row["HF s"] / row["detrlib s"]
            rows.append(row)
    return rows
