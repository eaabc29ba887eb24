"""``python -m detrlib bench model``: DETR-R50 on the CPU, detrlib next to Hugging Face.

Three jobs at each image size, on random weights: a batched forward pass (eval, no gradients), a training step's
forward + backward (train mode) and single-image inference. Hugging Face's ``DetrForObjectDetection`` runs the same
jobs when ``transformers`` is installed (:func:`~detrlib.bench.hf_detr`). Each number is the median of ``--repeats``
runs after a warm-up, the two libraries taking turns.
"""
from __future__ import annotations

import argparse

from detrlib.bench import benchmark, hf_detr, take_turns


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 800], help="square image sizes")
    parser.add_argument("--batch", type=int, default=2, help="batch size of the forward/backward rows")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row (the median is shown)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the detrlib model")
    parser.add_argument("--no-hf", action="store_true", help="skip Hugging Face even when installed")


def _loss(logits, boxes):
    return logits.float().logsumexp(-1).mean() + boxes.float().mean()


def _jobs(model, hf: bool, size: int, batch: int):
    """``name -> callable`` for one model; each callable runs one timed unit of work."""
    import torch

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


@benchmark("model", add_arguments=_arguments,
           help="DETR-R50 on CPU: forward, forward+backward and inference seconds, detrlib vs Hugging Face")
def run(args: argparse.Namespace) -> list[dict]:
    import torch

    from detrlib.config import ModelConfig
    from detrlib.model import build_model

    torch.manual_seed(0)
    ours = build_model(ModelConfig(backbone="resnet50", num_classes=91), compile=args.compile)
    theirs, why = (None, "Hugging Face rows skipped (--no-hf)") if args.no_hf else hf_detr()
    if why:
        print(why)

    rows = []
    for size in args.sizes:
        our_jobs = _jobs(ours, False, size, args.batch)
        their_jobs = _jobs(theirs, True, size, args.batch) if theirs is not None else {}
        for name, job in our_jobs.items():
            jobs = {"detrlib": job, **({"hf": their_jobs[name]} if name in their_jobs else {})}
            seconds = take_turns(jobs, args.repeats)
            row = {"job": name, "detrlib s": seconds["detrlib"]}
            if "hf" in seconds:
                row["HF s"] = seconds["hf"]
                row["HF / detrlib"] = seconds["hf"] / seconds["detrlib"]
            rows.append(row)
    return rows
