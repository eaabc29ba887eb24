"""Pictures the chapters reuse, one section per chapter. Every function draws with matplotlib and returns its figure
or axes; a figure is at most :data:`PAGE_WIDTH` inches wide, so it fits a notebook column (Jupyter, Colab) without
being shrunk to unreadable text."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle
from torchvision.ops import box_convert

PAGE_WIDTH = 8.0  # inches: a notebook column at matplotlib's inline resolution


def row_size(panels: int, panel: float, aspect: float = 1.0) -> tuple[float, float]:
    """The size of a figure of ``panels`` side by side, each ``panel`` inches wide (``aspect``: height over width),
    narrowed to :data:`PAGE_WIDTH`."""
    width = min(PAGE_WIDTH, panels * panel)
    return width, width / panels * aspect


def class_colours(n: int) -> list:
    cmap = plt.get_cmap("tab20" if n > 10 else "tab10")
    return [cmap(i % cmap.N) for i in range(n)]


def as_picture(image) -> np.ndarray:
    """An ``[H, W, 3]`` array for ``imshow`` from a PIL image or a ``[3, H, W]`` tensor in [0, 1]."""
    if isinstance(image, torch.Tensor):
        return image.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy()
    return np.asarray(image)


def draw_boxes(ax, image, boxes, labels, classes, scores=None, dashed=None, linewidth: float = 1.5):
    """Show ``image`` with ``boxes`` (``[N, 4]`` x1, y1, x2, y2 in pixels) named by ``classes[labels]``; ``scores``
    adds a confidence to each name, ``dashed`` (bool ``[N]``) draws some boxes dashed, e.g. difficult ones."""
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


def record_grid(dataset, indices, ncols: int = 4, size: float = 2.0, title: str = ""):
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


# ---------------------------------------------------------------- matching (chapter 3): cost matrices, assignments

MATCH_COLORS = plt.get_cmap("tab10").colors
TERM_TITLES = {"class": "class cost  -p(class)", "bbox": "L1 distance of the boxes", "giou": "-GIoU"}


def _numpy(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)


def _pairs_dict(pairs) -> dict[int, int]:
    """{prediction index: object index} from a matcher's ``(pred_idx, tgt_idx)``."""
    return dict(zip(_numpy(pairs[0]).astype(int).tolist(), _numpy(pairs[1]).astype(int).tolist()))


def plot_cost_terms(terms: dict, weights: dict, pairs=None, tgt_names: list[str] | None = None, fig=None):
    """Heatmaps of the weighted cost terms and their sum, objects as rows and predictions as columns.

    ``terms`` holds ``{"class", "bbox", "giou"}`` [Q, T] as from ``HungarianMatcher.cost_terms``, ``weights`` the
    matching weights under the same names. The three terms share one colour scale, so the one that varies most is the
    one that decides; matched cells of ``pairs`` are outlined, and with at most 16 predictions every cell shows its
    value.
    """
    weighted = {k: weights[k] * _numpy(terms[k]).T for k in ("class", "bbox", "giou")}
    panels = [(f"{weights[k]:g} x {TERM_TITLES[k]}", v) for k, v in weighted.items()]
    panels.append(("total cost", sum(weighted.values())))
    fig = fig or plt.figure(figsize=(PAGE_WIDTH, 6))
    axes = fig.subplots(4, 1, sharex=True)
    low = min(v.min() for v in weighted.values())
    high = max(v.max() for v in weighted.values())
    matched = _pairs_dict(pairs) if pairs is not None else {}
    for i, (ax, (title, values)) in enumerate(zip(axes, panels)):
        scale = {} if i == 3 else {"vmin": low, "vmax": high}
        image = ax.imshow(values, cmap="viridis" if i < 3 else "magma", aspect="auto", **scale)
        fig.colorbar(image, ax=ax, fraction=0.025, pad=0.01)
        if values.shape[1] <= 16:  # few enough cells to print their values
            for (t, q), v in np.ndenumerate(values):
                ax.text(q, t, f"{v:.1f}".replace("-0.0", "0.0"), ha="center", va="center", fontsize=7,
                        color="black" if image.norm(v) > 0.6 else "white")
        for q, t in matched.items():
            ax.add_patch(Rectangle((q - 0.5, t - 0.5), 1, 1, fill=False, ec="red", lw=2))
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_yticks(range(values.shape[0]), tgt_names or [f"object {t}" for t in range(values.shape[0])])
    axes[-1].set_xlabel("prediction (query) index")
    axes[-1].set_xticks(range(weighted["class"].shape[1]))
    fig.tight_layout()
    return fig


def draw_assignment(ax, pred_boxes, tgt_boxes, pairs, image=None, pred_names: list[str] | None = None,
                    tgt_names: list[str] | None = None, title: str = ""):
    """Objects (solid), predictions (dashed) and a line from each matched prediction to its object, one colour per
    object; unmatched predictions are grey: they are trained to say "no object"."""
    ax.imshow(np.full((2, 2, 3), 0.96) if image is None else image, extent=(0, 1, 1, 0))
    matched = _pairs_dict(pairs)
    tgt, pred = _numpy(tgt_boxes), _numpy(pred_boxes)
    for t, (cx, cy, w, h) in enumerate(tgt):
        color = MATCH_COLORS[t % len(MATCH_COLORS)]
        ax.add_patch(Rectangle((cx - w / 2, cy - h / 2), w, h, fill=False, ec=color, lw=2.5))
        name = tgt_names[t] if tgt_names else f"object {t}"
        ax.text(cx - w / 2, cy - h / 2, name, color="white", fontsize=8, va="bottom",
                bbox={"fc": color, "ec": "none", "pad": 1})
    for q, (cx, cy, w, h) in enumerate(pred):
        t = matched.get(q)
        color = "0.6" if t is None else MATCH_COLORS[t % len(MATCH_COLORS)]
        ax.add_patch(Rectangle((cx - w / 2, cy - h / 2), w, h, fill=False, ec=color, lw=1.2, ls="--"))
        label = f"q{q}" + (f" {pred_names[q]}" if pred_names else "")
        ax.text(cx + w / 2, cy + h / 2, label, color=color, fontsize=7, ha="right", va="top")
        if t is not None:
            ax.plot([cx, tgt[t][0]], [cy, tgt[t][1]], color=color, lw=1.5)
            ax.plot([cx], [cy], "o", color=color, ms=3)
    ax.set(xlim=(0, 1), ylim=(1, 0), xticks=[], yticks=[])
    ax.set_title(title, fontsize=10)
    return ax


def plot_layer_assignments(layers: list[tuple], tgt_boxes, image=None, tgt_names: list[str] | None = None,
                           titles: list[str] | None = None):
    """One :func:`draw_assignment` panel per decoder layer; ``layers`` holds ``(pred_boxes, pairs)``."""
    fig, axes = plt.subplots(1, len(layers), figsize=row_size(len(layers), 4), squeeze=False)
    for i, (ax, (boxes, pairs)) in enumerate(zip(axes[0], layers)):
        draw_assignment(ax, boxes, tgt_boxes, pairs, image=image, tgt_names=tgt_names,
                        title=titles[i] if titles else f"decoder layer {i + 1}")
    fig.tight_layout()


# ---------------------------------------------------------------- model pictures (chapter 2): predictions, attention

def _picture(image) -> np.ndarray:
    """A DETR input (ImageNet-normalized ``[3, H, W]``) as an ``[H, W, 3]`` picture in [0, 1]."""
    from detrlib.data.transforms import denormalize

    return as_picture(denormalize(image.detach().float().cpu()))


def plot_predictions(image, result: dict, class_names=None, ax=None, title: str = ""):
    """Boxes of one image's :class:`~detrlib.model.PostProcess` result (absolute ``x1, y1, x2, y2`` in the pixels of
    ``image``) with class and score."""
    ax = ax if ax is not None else plt.subplots(figsize=(5, 5))[1]
    labels = result["labels"]
    if class_names is None:
        class_names = [str(i) for i in range(int(labels.max()) + 1 if len(labels) else 1)]
    draw_boxes(ax, _picture(image), result["boxes"], labels, class_names, scores=result["scores"], linewidth=2)
    ax.set_title(title)
    return ax


def plot_position_encoding(pos, channels=(0, 1, 20, 64, 65, 84), title: str = ""):
    """Channels of one position encoding ``[d, h, w]``, one panel each (first half: rows for the sine encoding,
    second half: columns)."""
    pos = pos.detach().float().cpu()
    channels = [c for c in channels if c < pos.shape[0]]
    fig, axes = plt.subplots(1, len(channels), figsize=row_size(len(channels), 2.2, 1.15), squeeze=False)
    for ax, c in zip(axes[0], channels):
        ax.imshow(pos[c].numpy(), cmap="RdBu", vmin=-1, vmax=1)
        ax.set_title(f"channel {c}", fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return fig


def _heatmap(ax, image, weights, feature_shape):
    """``weights [h*w]`` over the feature grid, stretched over the (padded) image shown in grey."""
    grey = _picture(image).mean(-1)
    h, w = feature_shape
    ax.imshow(grey, cmap="gray", vmin=0, vmax=1)
    ax.imshow(weights.detach().float().cpu().reshape(h, w).numpy(), cmap="inferno", alpha=0.7,
              extent=(0, grey.shape[1], grey.shape[0], 0), interpolation="nearest")
    ax.axis("off")


def plot_encoder_attention(image, weights, feature_shape, pixels, stride: int):
    """Where chosen pixels look: encoder self-attention ``weights [hw, hw]`` (heads averaged) of the feature cell under
    each ``(y, x)`` image pixel; ``stride`` is the backbone's."""
    h, w = feature_shape
    fig, axes = plt.subplots(1, len(pixels) + 1, figsize=row_size(len(pixels) + 1, 3.2, 1.1))
    axes[0].imshow(_picture(image))
    axes[0].set_title("image and chosen pixels", fontsize=9)
    axes[0].axis("off")
    for i, ((y, x), ax) in enumerate(zip(pixels, axes[1:])):
        cell = min(y // stride, h - 1) * w + min(x // stride, w - 1)
        axes[0].scatter([x], [y], s=80, c=[plt.cm.tab10(i)], edgecolors="white")
        _heatmap(ax, image, weights[cell], feature_shape)
        ax.scatter([x], [y], s=80, c=[plt.cm.tab10(i)], edgecolors="white")
        ax.set_title(f"pixel (y={y}, x={x}) attends to", fontsize=9)
    return fig


def plot_decoder_attention(image, weights, feature_shape, queries, boxes=None, labels=None):
    """What each chosen object query reads: decoder cross-attention ``weights [Q, hw]`` (heads averaged) over the
    image, with the query's predicted box (absolute ``x1, y1, x2, y2``) if given."""
    fig, axes = plt.subplots(1, len(queries), figsize=row_size(max(len(queries), 2), 3.2, 1.15), squeeze=False)
    for ax, q in zip(axes[0], queries):
        _heatmap(ax, image, weights[q], feature_shape)
        if boxes is not None:
            x1, y1, x2, y2 = boxes[q].tolist()
            ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="cyan", lw=2))
        ax.set_title(f"query {q}" + (f": {labels[q]}" if labels is not None else ""), fontsize=9)
    return fig


# ---------------------------------------------------------------- training (chapter 4): a run's metrics.jsonl

METRIC_NAMES = {"train_loss": "weighted loss", "train_loss_ce": "classification loss",
                "train_loss_bbox": "L1 box loss", "train_loss_giou": "GIoU loss",
                "train_class_error": "class error (%)", "train_cardinality_error": "objects per image",
                "AP50": "AP@0.5", "AP": "COCO AP", "AR100": "recall (AR100)",
                "match_instability": "share of changed matches"}


def plot_metrics(runs: dict[str, list[dict]], keys: list[str], x: str = "step", ncols: int = 3, title: str = ""):
    """One panel per metric in ``keys`` (e.g. ``train_loss_ce``, ``AP50``), one line per run in ``runs``
    (``{label: history}``, a history being :func:`detrlib.runfolder.read_metrics`'s list)."""
    nrows = -(-len(keys) // ncols)
    width, height = row_size(ncols, 4.2, 0.75)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for label, history in runs.items():
            points = [(h[x], h[key]) for h in history if h.get(key) is not None]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=label)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel(x, fontsize=8)
        ax.set_ylabel(METRIC_NAMES.get(key, key), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_axis_off()
    if len(runs) > 1:
        axes.flat[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- denoising (chapter 5)

def plot_denoising(ax, image, target, dn, b: int, classes, title: str = ""):
    """Image ``b`` of a batch (normalized, padded) with its objects in white and the noised boxes of each denoising
    group dashed in the group's colour; a flipped label reads "true -> noised"."""
    h, w = (int(v) for v in target["size"])
    ax.imshow(_picture(image[:, :h, :w]))
    scale = torch.tensor([w, h, w, h])
    noised = box_convert(dn.boxes[b].float(), "cxcywh", "xyxy") * scale
    for x1, y1, x2, y2 in target_boxes(target).tolist():
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="white", lw=2))
    for q in dn.valid[b].nonzero().flatten().tolist():
        group, obj = divmod(q, dn.pad)
        (x1, y1, x2, y2), colour = noised[q].tolist(), plt.cm.tab10(group)
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=colour, lw=1.2, ls="--"))
        true, noisy = int(target["labels"][obj]), int(dn.labels[b, q])
        if noisy != true:  # name only the flipped labels
            ax.text(x1, y1, f"{classes[true]} -> {classes[noisy]}", fontsize=6, color="white", va="bottom",
                    bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "lw": 0})
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def plot_attention_mask(ax, mask, dn, num_queries: int, title: str = ""):
    """A decoder self-attention mask (True: may not attend), its denoising groups and matching queries marked off."""
    ax.imshow(mask.int().cpu().numpy(), cmap="Greys", vmin=0, vmax=1.6, interpolation="nearest")
    for k in range(1, dn.groups + 1):
        ax.axhline(k * dn.pad - 0.5, color="tab:red", lw=0.8)
        ax.axvline(k * dn.pad - 0.5, color="tab:red", lw=0.8)
    ticks = [g * dn.pad + (dn.pad - 1) / 2 for g in range(dn.groups)] + [dn.groups * dn.pad + (num_queries - 1) / 2]
    names = [f"DN {g}" for g in range(dn.groups)] + ["matching"]
    ax.set_xticks(ticks, names, fontsize=7, rotation=90)
    ax.set_yticks(ticks, names, fontsize=7)
    ax.set(xlabel="key (attended to)", ylabel="query (attending)")
    ax.set_title(title, fontsize=9)
