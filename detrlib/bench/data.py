"""``python -m detrlib bench data``: how fast the toy VOC is made and read.

Rows: generating the toy VOC in one process (target: 2,000 images in at most 20 s); images per second through a
DataLoader with the training transforms for detrlib's ``VOCDataset`` and for ``torchvision.datasets.VOCDetection``
reading the same tree (target: detrlib at least as fast). The loaders take turns for ``--passes`` passes each and the
fastest pass counts, which leaves out worker start-up and most of the noise of a shared machine.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from detrlib.bench import benchmark
from detrlib.config import get_profile


class VOCDetectionTarget:
    """VOCDetection's nested-dict target -> the same tv_tensors and transforms as VOCDataset."""

    def __init__(self, transforms, classes):
        self.transforms = transforms
        self.index = {name: i for i, name in enumerate(classes)}

    def __call__(self, image, target):
        import torch
        from torchvision import tv_tensors
        from torchvision.ops import box_convert

        objects = [o for o in target["annotation"]["object"] if o["difficult"] == "0"]
        boxes = torch.tensor([[float(o["bndbox"][k]) for k in ("xmin", "ymin", "xmax", "ymax")] for o in objects])
        boxes = boxes.reshape(-1, 4) - torch.tensor([1.0, 1.0, 0.0, 0.0])
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(image.height, image.width)),
            "labels": torch.tensor([self.index[o["name"]] for o in objects], dtype=torch.int64),
            "difficult": torch.zeros(len(objects), dtype=torch.bool),
            "truncated": torch.tensor([o["truncated"] == "1" for o in objects]),
        }
        image, target = self.transforms(image, target)
        h, w = image.shape[-2:]
        boxes = box_convert(target["boxes"].as_subclass(torch.Tensor), "xyxy", "cxcywh")
        target["boxes"] = boxes / torch.tensor([w, h, w, h])
        return image.as_subclass(torch.Tensor), target


def loading_seconds_per_image(loader) -> float:
    start, seen = time.perf_counter(), 0
    for images, _, _ in loader:
        seen += len(images)
    return (time.perf_counter() - start) / seen


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=int, default=2000, help="toy training images (default 2000)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--passes", type=int, default=4, help="passes over the data per loader; the fastest counts")
    parser.add_argument("--profile", default="quick", help="whose training transforms (default quick)")


@benchmark("data", "toy VOC generation and DataLoader throughput vs torchvision's VOCDetection", add_arguments)
def run(args: argparse.Namespace) -> list[dict]:
    import torch
    from torchvision.datasets import VOCDetection

    from detrlib.data import build_loader, collate
    from detrlib.data.toy import TOY_CLASSES, ToySpec, make_toy_voc
    from detrlib.data.transforms import build_train_transforms
    from detrlib.data.voc import VOCDataset

    cfg = get_profile(args.profile).data
    transforms = build_train_transforms(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        year_dir = make_toy_voc(tmp, args.images, 0, seed=0, spec=ToySpec(image_size=cfg.toy_image_size))
        seconds = time.perf_counter() - start
        rows = [{"what": f"make-toy, {args.images} images, one process", "seconds": seconds,
                 "images/s": args.images / seconds, "target": "<= 20 s for 2000"}]

        ours = VOCDataset([(year_dir, "train")], transforms)
        # VOCDetection only knows VOC<year> folders: show it the toy tree as VOC2012
        os.symlink(year_dir, Path(tmp) / "VOCdevkit" / "VOC2012")
        theirs = VOCDetection(tmp, year="2012", image_set="train",
                              transforms=VOCDetectionTarget(transforms, TOY_CLASSES))
        loaders = {
            "detrlib VOCDataset": build_loader(ours, args.batch_size, train=True, num_workers=args.workers),
            "torchvision VOCDetection": torch.utils.data.DataLoader(
                theirs, batch_size=args.batch_size, shuffle=True, drop_last=True, collate_fn=collate,
                num_workers=args.workers, persistent_workers=args.workers > 0),
        }
        best = {name: float("inf") for name in loaders}
        for _ in range(args.passes):  # alternate, so that a busy moment of the machine hits both
            for name, loader in loaders.items():
                best[name] = min(best[name], loading_seconds_per_image(loader))
        speeds = {name: 1 / s for name, s in best.items()}
        for name in loaders:
            rows.append({"what": f"{name}, {args.workers} workers, {args.profile} train transforms",
                         "seconds": len(ours) / speeds[name], "images/s": speeds[name], "target": ""})
        ratio = speeds["detrlib VOCDataset"] / speeds["torchvision VOCDetection"]
        rows.append({"what": "ratio detrlib / torchvision", "seconds": "", "images/s": ratio, "target": ">= 1.0"})
    return rows
