"""``python -m detrlib bench matcher``: per-image Hungarian matching against the all-pairs batched cost matrix of the
official DETR code, on random problems of DETR's sizes, the two taking turns."""
from __future__ import annotations

import argparse
import statistics
from typing import TYPE_CHECKING

from detrlib.bench import benchmark, random_boxes, take_turns

if TYPE_CHECKING:
    import torch

    from detrlib.matcher import HungarianMatcher

# (images per batch, queries, most objects per image); each image gets 1..most objects
SETTINGS = ((8, 100, 20), (32, 100, 20), (64, 100, 20), (8, 300, 50))
# speedup targets by batch size at 100 queries: quiet, and next to busy neighbours (--busy)
TARGETS = {False: {32: 4.0, 64: 6.0}, True: {32: 4.0, 64: 4.0}}
NUM_CLASSES = 20


def all_pairs_match(matcher: HungarianMatcher, outputs: dict, targets: list[dict]) -> list[tuple]:
    """The baseline: one [B*Q, sum T] cost matrix across the whole batch, of which only the B diagonal blocks
    [Q, T_b] are used (the formulation of the official DETR matcher)."""
    import torch
    from scipy.optimize import linear_sum_assignment
    from torchvision.ops import box_convert, generalized_box_iou

    with torch.no_grad():
        B, Q = outputs["pred_logits"].shape[:2]
        prob = outputs["pred_logits"].flatten(0, 1).float().softmax(-1)
        boxes = outputs["pred_boxes"].flatten(0, 1).float()
        labels = torch.cat([t["labels"] for t in targets])
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).float()
        cost = (matcher.cost_bbox * torch.cdist(boxes, tgt_boxes, p=1)
                - matcher.cost_class * prob[:, labels]
                - matcher.cost_giou * generalized_box_iou(box_convert(boxes, "cxcywh", "xyxy"),
                                                          box_convert(tgt_boxes, "cxcywh", "xyxy")))
        cost = cost.view(B, Q, -1).cpu()
        sizes = [len(t["boxes"]) for t in targets]
        indices = []
        for b, block in enumerate(cost.split(sizes, -1)):
            rows, cols = linear_sum_assignment(block[b].numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices


def random_problem(batch: int, queries: int, most: int, generator: torch.Generator, device) -> tuple[dict, list]:
    """Random logits, boxes inside the image, and 1..``most`` objects per image."""
    import torch

    outputs = {"pred_logits": torch.randn(batch, queries, NUM_CLASSES + 1, generator=generator).to(device),
               "pred_boxes": random_boxes((batch, queries), generator).to(device)}
    targets = []
    for _ in range(batch):
        n = int(torch.randint(1, most + 1, (), generator=generator))
        targets.append({"boxes": random_boxes(n, generator).to(device),
                        "labels": torch.randint(0, NUM_CLASSES, (n,), generator=generator).to(device)})
    return outputs, targets


def same(a: list[tuple], b: list[tuple]) -> bool:
    import torch

    return all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b, strict=True))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per problem (median taken)")
    parser.add_argument("--problems", type=int, default=5, help="random problems per setting")
    parser.add_argument("--device", default="cpu", help="where the cost matrices are computed (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 keeps torch's default")
    parser.add_argument("--seed", type=int, default=0)


@benchmark("matcher", "Hungarian matching: per-image cost matrices vs the all-pairs batched matrix",
           add_arguments)
def run(args: argparse.Namespace) -> list[dict]:
    import torch

    from detrlib.matcher import HungarianMatcher

    print(f"device {args.device}, {torch.get_num_threads()} torch threads, median of {args.repeats} calls "
          f"on each of {args.problems} random problems, {NUM_CLASSES} classes"
          + (f", next to {args.busy} spinning processes" if args.busy else ""))
    matcher = HungarianMatcher()
    generator = torch.Generator().manual_seed(args.seed)
    rows = []
    for batch, queries, most in SETTINGS:
        per_image, all_pairs, identical = [], [], 0
        for _ in range(args.problems):
            outputs, targets = random_problem(batch, queries, most, generator, args.device)
            # both end with a copy to the CPU, so a GPU is synchronised when the clock is read
            times = take_turns({"per-image": lambda: matcher(outputs, targets),
                                "all-pairs": lambda: all_pairs_match(matcher, outputs, targets)}, args.repeats)
            per_image.append(times["per-image"] * 1e3)
            all_pairs.append(times["all-pairs"] * 1e3)
            identical += same(matcher(outputs, targets), all_pairs_match(matcher, outputs, targets))
        ours, base = statistics.median(per_image), statistics.median(all_pairs)
        target = TARGETS[bool(args.busy)].get(batch) if queries == 100 else None
        rows.append({
            "B": batch, "Q": queries, "T/img": f"1..{most}",
            "per-image ms": ours, "all-pairs ms": base, "speedup": base / ours,
            "per-image ms/img": ours / batch, "all-pairs ms/img": base / batch,
            "identical": f"{identical}/{args.problems}",
            "target": f">={target:g}x {'met' if base / ours >= target else 'MISSED'}" if target else "",
        })
    return rows
