"""Pictures the chapters reuse. Boxes are normalized cx, cy, w, h, drawn over an image shown with
extent (0, 1, 1, 0), so the same coordinates work for any image size and for a blank canvas."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle

# ---------------------------------------------------------------------------------------------
# Matching (chapter 3): cost matrices and assignments
# ---------------------------------------------------------------------------------------------

MATCH_COLORS = plt.get_cmap("tab10").colors
TERM_TITLES = {"class": "class cost  -p(class)", "bbox": "L1 distance of the boxes", "giou": "-GIoU"}


def _numpy(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)


def _pairs_dict(pairs) -> dict[int, int]:
    """{prediction index: object index} from a matcher's ``(pred_idx, tgt_idx)``."""
    return dict(zip(_numpy(pairs[0]).astype(int).tolist(), _numpy(pairs[1]).astype(int).tolist()))


def plot_cost_terms(terms: dict, weights: dict, pairs=None, tgt_names: list[str] | None = None, fig=None):
    """Heatmaps of the weighted cost terms and their sum, objects as rows and predictions as columns.

    ``terms`` holds ``{"class", "bbox", "giou"}`` [Q, T] as from ``HungarianMatcher.cost_terms``,
    ``weights`` the matching weights under the same names. The three terms share one colour scale,
    so the one that varies most is the one that decides; matched cells of ``pairs`` are outlined,
    and with at most 16 predictions every cell shows its value.
    """
    weighted = {k: weights[k] * _numpy(terms[k]).T for k in ("class", "bbox", "giou")}
    panels = [(f"{weights[k]:g} x {TERM_TITLES[k]}", v) for k, v in weighted.items()]
    panels.append(("total cost", sum(weighted.values())))
    fig = fig or plt.figure(figsize=(11, 7))
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
    """Objects (solid), predictions (dashed) and a line from each matched prediction to its object,
    one colour per object; unmatched predictions are grey: they are trained to say "no object"."""
    if image is None:
        image = np.full((2, 2, 3), 0.96)
    ax.imshow(image, extent=(0, 1, 1, 0))
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
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    return ax


def plot_layer_assignments(layers: list[tuple], tgt_boxes, image=None, tgt_names: list[str] | None = None,
                           titles: list[str] | None = None):
    """One :func:`draw_assignment` panel per decoder layer; ``layers`` holds ``(pred_boxes, pairs)``."""
    fig, axes = plt.subplots(1, len(layers), figsize=(4 * len(layers), 4), squeeze=False)
    for i, (ax, (boxes, pairs)) in enumerate(zip(axes[0], layers)):
        draw_assignment(ax, boxes, tgt_boxes, pairs, image=image, tgt_names=tgt_names,
                        title=titles[i] if titles else f"decoder layer {i + 1}")
    fig.tight_layout()
    return fig
