"""Pictures for the chapters. Every function draws with matplotlib and returns its figure or axes."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

# ---------------------------------------------------------------- model pictures (chapter 2):
# predictions, position encodings, encoder and decoder attention

_IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406])
_IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225])


def _rgb(image) -> np.ndarray:
    """``[3, H, W]`` float tensor, ImageNet-normalized (as DETR's inputs are) -> ``[H, W, 3]`` in [0, 1]."""
    image = image.detach().float().cpu()
    rgb = image * _IMAGENET_STD[:, None, None] + _IMAGENET_MEAN[:, None, None]
    return rgb.clamp(0, 1).permute(1, 2, 0).numpy()


def _axes(ax):
    return ax if ax is not None else plt.subplots(figsize=(5, 5))[1]


def plot_predictions(image, result: dict, class_names=None, ax=None, title: str = ""):
    """Boxes of one image's :class:`~detrlib.model.PostProcess` result (absolute ``x1, y1, x2, y2``
    in the pixels of ``image``) with class and score."""
    ax = _axes(ax)
    ax.imshow(_rgb(image))
    colors = plt.cm.tab10.colors
    for box, label, score in zip(result["boxes"].tolist(), result["labels"].tolist(), result["scores"].tolist()):
        x1, y1, x2, y2 = box
        color = colors[label % len(colors)]
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=color, lw=2))
        name = class_names[label] if class_names is not None else str(label)
        ax.text(x1, y1, f"{name} {score:.2f}", color="white", fontsize=8, va="bottom",
                bbox=dict(facecolor=color, alpha=0.8, pad=1, lw=0))
    ax.set_title(title)
    ax.axis("off")
    return ax


def plot_position_encoding(pos, channels=(0, 1, 20, 64, 65, 84), title: str = ""):
    """Channels of one position encoding ``[d, h, w]``, one panel each (first half: rows for the
    sine encoding, second half: columns)."""
    pos = pos.detach().float().cpu()
    channels = [c for c in channels if c < pos.shape[0]]
    fig, axes = plt.subplots(1, len(channels), figsize=(2.2 * len(channels), 2.4), squeeze=False)
    for ax, c in zip(axes[0], channels):
        ax.imshow(pos[c].numpy(), cmap="RdBu", vmin=-1, vmax=1)
        ax.set_title(f"channel {c}", fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return fig


def _heatmap(ax, image, weights, feature_shape):
    """``weights [h*w]`` over the feature grid, stretched over the (padded) image shown in grey."""
    grey = _rgb(image).mean(-1)
    h, w = feature_shape
    ax.imshow(grey, cmap="gray", vmin=0, vmax=1)
    ax.imshow(weights.detach().float().cpu().reshape(h, w).numpy(), cmap="inferno", alpha=0.7,
              extent=(0, grey.shape[1], grey.shape[0], 0), interpolation="nearest")
    ax.axis("off")


def plot_encoder_attention(image, weights, feature_shape, pixels, stride: int):
    """Where chosen pixels look: encoder self-attention ``weights [hw, hw]`` (heads averaged) of
    the feature cell under each ``(y, x)`` image pixel; ``stride`` is the backbone's."""
    h, w = feature_shape
    fig, axes = plt.subplots(1, len(pixels) + 1, figsize=(3.2 * (len(pixels) + 1), 3.4))
    axes[0].imshow(_rgb(image))
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
    """What each chosen object query reads: decoder cross-attention ``weights [Q, hw]`` (heads
    averaged) over the image, with the query's predicted box (absolute ``x1, y1, x2, y2``) if given."""
    fig, axes = plt.subplots(1, len(queries), figsize=(max(4.0, 3.2 * len(queries)), 3.6), squeeze=False)
    for ax, q in zip(axes[0], queries):
        _heatmap(ax, image, weights[q], feature_shape)
        if boxes is not None:
            x1, y1, x2, y2 = boxes[q].tolist()
            ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="cyan", lw=2))
        ax.set_title(f"query {q}" + (f": {labels[q]}" if labels is not None else ""), fontsize=9)
    return fig
