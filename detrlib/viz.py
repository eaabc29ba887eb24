"""Pictures used across chapters: images with labelled boxes, class histograms, box sizes."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle
from torchvision.ops import box_convert


def class_colours(n: int) -> list:
    cmap = plt.get_cmap("tab20" if n > 10 else "tab10")
    return [cmap(i % cmap.N) for i in range(n)]


def as_picture(image) -> np.ndarray:
    """An ``[H, W, 3]`` array for ``imshow`` from a PIL image or a ``[3, H, W]`` tensor in [0, 1]."""
    if isinstance(image, torch.Tensor):
        return image.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy()
    return np.asarray(image)


def draw_boxes(ax, image, boxes, labels, classes, scores=None, dashed=None, linewidth: float = 1.5):
    """Show ``image`` with ``boxes`` (``[N, 4]`` x1, y1, x2, y2 in pixels) named by ``classes[labels]``.

    ``scores`` adds a confidence to each name; ``dashed`` (bool ``[N]``) draws some boxes dashed,
    e.g. difficult ones.
    """
    ax.imshow(as_picture(image))
    colours = class_colours(len(classes))
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    for i, (box, label) in enumerate(zip(boxes.tolist(), torch.as_tensor(labels).tolist())):
        x1, y1, x2, y2 = box
        style = "--" if dashed is not None and bool(dashed[i]) else "-"
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colours[label],
                               linewidth=linewidth, linestyle=style))
        text = classes[label] if scores is None else f"{classes[label]} {float(scores[i]):.2f}"
        ax.text(x1, y1, text, fontsize=7, color="white", va="bottom",
                bbox={"facecolor": colours[label], "alpha": 0.8, "pad": 1, "edgecolor": "none"})
    ax.set_axis_off()


def target_boxes(target) -> torch.Tensor:
    """A DETR target's normalized cx, cy, w, h boxes as pixel corners of its (transformed) image."""
    h, w = (int(v) for v in target["size"])
    return box_convert(target["boxes"], "cxcywh", "xyxy") * torch.tensor([w, h, w, h])


def show_item(ax, image, target, classes, title: str | None = None):
    """A dataset item (image already in [0, 1], see ``denormalize``) with its target boxes."""
    draw_boxes(ax, image, target_boxes(target), target["labels"], classes, dashed=target.get("difficult"))
    if title:
        ax.set_title(title, fontsize=8)


def record_grid(dataset, indices, ncols: int = 4, size: float = 2.6, title: str = ""):
    """Original images of a VOC dataset with all their boxes (difficult ones dashed)."""
    from detrlib.data.voc import load_image

    nrows = -(-len(indices) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, indices):
        r = dataset.records[i]
        draw_boxes(ax, load_image(r.image_path), r.boxes, r.labels, dataset.classes, dashed=r.difficult)
        ax.set_title(r.name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_class_histogram(ax, counts: dict, head=(), tail=(), title: str = "", **bar):
    """Objects per class, most frequent first, head and tail classes coloured."""
    names = sorted(counts, key=lambda c: -counts[c])
    colours = ["tab:red" if n in head else "tab:blue" if n in tail else "tab:gray" for n in names]
    ax.bar(range(len(names)), [counts[n] for n in names], color=colours, **bar)
    ax.set_xticks(range(len(names)), names, rotation=70, ha="right", fontsize=8)
    ax.set_ylabel("objects")
    if head or tail:
        ax.legend(handles=[Rectangle((0, 0), 1, 1, color=c) for c in ("tab:red", "tab:gray", "tab:blue")],
                  labels=["head", "middle", "tail"], fontsize=8)
    ax.set_title(title, fontsize=10)


def plot_box_sizes(ax, areas, title: str = "box sizes"):
    """Histogram of box sides (square root of the area, pixels), with COCO's small/medium/large lines."""
    sides = np.sqrt(np.asarray(areas, dtype=float))
    ax.hist(sides, bins=40, color="tab:green")
    for limit, name in ((32, "small | medium"), (96, "medium | large")):
        if sides.size and limit <= sides.max() * 1.2:
            ax.axvline(limit, color="black", linestyle="--", linewidth=1)
            ax.text(limit, ax.get_ylim()[1] * 0.95, f" {name}", fontsize=8, va="top")
    ax.set_xlabel("sqrt(box area), pixels of the original image")
    ax.set_ylabel("objects")
    ax.set_title(title, fontsize=10)
