"""The toy VOC: a generated, genuine VOCdevkit tree (JPEG + XML) that a CPU can learn from.

Each class is a shape in its own colour (``red_circle``, ``teal_diamond``, ...): 12 classes on 6 shapes, so *what*
an object is stays easy to learn, and the hard part is DETR's: *where* each object is, how many there are, small and
hidden ones, rare classes. It carries PASCAL VOC's difficulties at a CPU's scale (:class:`ToySpec`): a long tail
(class counts fall exponentially, dealt exactly, so ``imbalance`` holds for any number of images), small objects,
objects hiding each other (the box is the visible extent, as VOC annotates it; those hidden more than
``difficult_hidden`` are ``difficult``), objects cut by the border (``truncated``), and clutter: decoy shapes in
non-class colours, lines and dots on gradient, blotchy, striped or checkered backgrounds.

Same seed and settings: byte-identical files. Layout: ``<root>/VOCdevkit/VOCtoy/`` with ``Annotations``,
``JPEGImages``, ``ImageSets/Main/{train,val}.txt`` and ``classes.txt``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from detrlib.data.voc import VOC_CLASSES, split_file, write_split
from detrlib.errors import DataError

YEAR = "VOCtoy"
VERSION = 2  # part of the cache key of ensure_toy_voc: bump it when the pictures change
SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
COLOURS = {"red": (215, 40, 40), "orange": (245, 135, 20), "yellow": (240, 215, 30), "lime": (150, 215, 40),
           "green": (30, 140, 50), "teal": (20, 160, 150), "cyan": (60, 200, 240), "blue": (40, 70, 220),
           "purple": (120, 50, 200), "magenta": (220, 40, 200), "pink": (250, 160, 190), "navy": (20, 30, 110)}
# In frequency order, head first.
TOY_CLASSES = (
    "red_circle", "blue_square", "green_triangle", "yellow_star", "cyan_circle", "orange_square",
    "purple_triangle", "lime_star", "magenta_cross", "teal_diamond", "pink_cross", "navy_diamond",
)
DECOY_COLOURS = ((128, 128, 128), (150, 110, 70), (235, 235, 225), (60, 60, 60))  # no class wears these


@dataclass(frozen=True)
class ToySpec:
    """The generator's knobs."""

    image_size: int = 128  # longer side; the shorter is 3/4 of it or the same
    min_objects: int = 1
    max_objects: int = 6
    imbalance: float = 12.0  # head-class objects per tail-class object
    small_fraction: float = 0.2  # objects 10-31 px across (COCO "small", area < 32^2)
    large_range: tuple[float, float] = (0.27, 0.5)  # other objects, as a fraction of image_size
    truncated_fraction: float = 0.1  # objects placed across the border
    max_hidden: float = 0.5  # no object is hidden more than this by later ones
    difficult_hidden: float = 0.45  # objects hidden more than this are marked difficult
    clutter: float = 4.0  # decoys, lines and dots per image, on average
    jpeg_quality: int = 90


def class_quotas(total: int, num_classes: int, imbalance: float) -> np.ndarray:
    """Objects per class for ``total`` objects, falling exponentially from head to tail by the
    factor ``imbalance`` (largest-remainder rounding, so the counts add up to ``total``)."""
    weights = imbalance ** (-np.arange(num_classes) / max(num_classes - 1, 1))
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(int)
    counts[np.argsort(counts - exact)[: total - counts.sum()]] += 1
    return counts


def _muted(rng) -> np.ndarray:
    grey = rng.uniform(70, 200)
    return np.clip(grey + rng.uniform(-35, 35, 3), 0, 255)


def background(rng, height: int, width: int) -> np.ndarray:
    """A muted background: gradient, blotches, stripes or checks, with a little pixel noise."""
    a, b = _muted(rng), _muted(rng)
    kind = rng.integers(4)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == 0:  # linear gradient
        angle = rng.uniform(0, 2 * math.pi)
        t = x * math.cos(angle) + y * math.sin(angle)
        t = (t - t.min()) / (np.ptp(t) + 1e-6)
    elif kind == 1:  # smooth blotches
        coarse = Image.fromarray((rng.random((rng.integers(3, 7), rng.integers(3, 7))) * 255).astype(np.uint8))
        t = np.asarray(coarse.resize((width, height), Image.BILINEAR), dtype=np.float32) / 255
    elif kind == 2:  # stripes
        angle, period = rng.uniform(0, math.pi), rng.uniform(6, 20)
        t = 0.5 + 0.5 * np.sin((x * math.cos(angle) + y * math.sin(angle)) * 2 * math.pi / period)
    else:  # checks
        cell = rng.integers(6, 20)
        t = ((x // cell + y // cell) % 2).astype(np.float32)
        b = a + (b - a) * 0.4  # low contrast
    pixels = a + (b - a) * t[..., None]
    pixels += rng.normal(0, 5, (height, width, 1))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def shape_polygon(shape: str, cx: float, cy: float, w: float, h: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a shape filling a ``w x h`` box around ``(cx, cy)``, rotated by ``angle``."""
    if shape == "circle":
        t = np.linspace(0, 2 * math.pi, 32, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif shape == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float)
    elif shape == "triangle":
        t = -math.pi / 2 + np.arange(3) * 2 * math.pi / 3
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif shape == "star":
        t = -math.pi / 2 + np.arange(10) * math.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    elif shape == "cross":
        a = 0.36
        pts = np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a],
                        [-1, a], [-1, -a], [-a, -a]], dtype=float)
    elif shape == "diamond":
        pts = np.array([[0, -1], [0.62, 0], [0, 1], [-0.62, 0]], dtype=float)
    else:
        raise ValueError(f"unknown toy shape {shape!r}; shapes are {SHAPES}")
    pts = pts * (w / 2, h / 2)
    c, s = math.cos(angle), math.sin(angle)
    pts = pts @ np.array([[c, s], [-s, c]])
    return [(cx + px, cy + py) for px, py in pts]


# How far each shape may turn: a square turned 45 degrees would be a diamond.
MAX_TURN = {"circle": math.pi, "square": 0.25, "triangle": math.pi, "star": math.pi, "cross": 0.25, "diamond": 0.15}


def _mask(size: tuple[int, int], polygon) -> np.ndarray:
    canvas = Image.new("1", size)
    ImageDraw.Draw(canvas).polygon(polygon, fill=1)
    return np.asarray(canvas)


def _draw_clutter(draw: ImageDraw.ImageDraw, rng, width: int, height: int, count: int, spec: ToySpec,
                  decoys: bool = True) -> None:
    for _ in range(count):
        kind = rng.integers(0 if decoys else 1, 3)
        colour = tuple(int(v) for v in DECOY_COLOURS[rng.integers(len(DECOY_COLOURS))])
        if kind == 0:  # a decoy: a class shape in a colour no class has
            side = rng.uniform(10, spec.large_range[1] * spec.image_size * 0.7)
            poly = shape_polygon(SHAPES[rng.integers(len(SHAPES))], rng.uniform(0, width), rng.uniform(0, height),
                                 side, side * rng.uniform(0.8, 1.25), rng.uniform(-math.pi, math.pi))
            draw.polygon(poly, fill=colour, outline=(30, 30, 30))
        elif kind == 1:  # a scribble
            pts = [(float(rng.uniform(0, width)), float(rng.uniform(0, height))) for _ in range(rng.integers(2, 4))]
            draw.line(pts, fill=colour, width=int(rng.integers(1, 4)))
        else:  # a few dots
            for _ in range(rng.integers(2, 6)):
                x, y, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(1, 3)
                draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)


def make_image(rng, labels: list[int], spec: ToySpec) -> tuple[Image.Image, list[dict]]:
    """One picture with objects of the given class labels; returns it and its VOC objects."""
    long, short = spec.image_size, round(spec.image_size * 0.75)
    width, height = [(long, short), (short, long), (long, long)][rng.integers(3)]
    image = Image.fromarray(background(rng, height, width))
    draw = ImageDraw.Draw(image)
    n_clutter = rng.poisson(spec.clutter)
    n_under = rng.binomial(n_clutter, 0.75)  # most clutter lies under the objects; thin marks also on top
    _draw_clutter(draw, rng, width, height, n_under, spec)

    visible = []  # per placed object: mask of its pixels nobody covers yet
    placed = []
    for label in labels:
        colour_name, shape = TOY_CLASSES[label].split("_")
        small = rng.random() < spec.small_fraction
        side = rng.uniform(10, 31) if small else rng.uniform(*spec.large_range) * spec.image_size
        aspect = rng.uniform(0.8, 1.25)
        w, h = side * math.sqrt(aspect), side / math.sqrt(aspect)
        if shape == "diamond":  # diamonds are tall; keep their box within the size range
            w, h = w * 0.8, h * 1.2
        truncate = rng.random() < spec.truncated_fraction
        angle = rng.uniform(-MAX_TURN[shape], MAX_TURN[shape])
        for _ in range(20):
            if truncate:  # centre near an edge: up to ~40% of the object outside
                cx = rng.choice([rng.uniform(-0.1 * w, 0.2 * w), rng.uniform(width - 0.2 * w, width + 0.1 * w)])
                cy = rng.uniform(h / 2, height - h / 2) if rng.random() < 0.5 else rng.choice(
                    [rng.uniform(-0.1 * h, 0.2 * h), rng.uniform(height - 0.2 * h, height + 0.1 * h)])
            else:
                cx, cy = rng.uniform(w / 2, width - w / 2), rng.uniform(h / 2, height - h / 2)
            poly = shape_polygon(shape, cx, cy, w, h, angle)
            mask = _mask((width, height), poly)
            if mask.sum() < 16:
                continue
            after = [v & ~mask for v in visible]
            if all(a.sum() >= (1 - spec.max_hidden) * o["area"] for a, o in zip(after, placed)):
                break
            w, h = w * 0.9, h * 0.9  # crowded: try smaller
        else:
            continue  # no room left for this object
        fill = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in COLOURS[colour_name])
        draw.polygon(poly, fill=fill, outline=(25, 25, 25), width=1 if min(w, h) < 24 else 2)
        visible = after + [mask]
        xs, ys = zip(*poly)
        cut = min(xs) < 0 or min(ys) < 0 or max(xs) > width or max(ys) > height
        placed.append({"label": label, "area": int(mask.sum()), "truncated": cut})

    _draw_clutter(draw, rng, width, height, n_clutter - n_under, spec, decoys=False)
    objects = []
    for obj, mask in zip(placed, visible):
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if not len(rows):
            continue
        hidden = 1 - mask.sum() / obj["area"]
        objects.append({
            "name": TOY_CLASSES[obj["label"]],
            "box": (int(cols[0]) + 1, int(rows[0]) + 1, int(cols[-1]) + 1, int(rows[-1]) + 1),  # VOC: 1-based
            "truncated": int(obj["truncated"]),
            "difficult": int(hidden > spec.difficult_hidden),
        })
    return image, objects


def annotation_xml(filename: str, width: int, height: int, objects: list[dict], folder: str = YEAR) -> str:
    """A VOC annotation as the devkit writes it."""
    parts = [
        "<annotation>", f"\t<folder>{folder}</folder>", f"\t<filename>{filename}</filename>",
        "\t<source>", "\t\t<database>detrlib toy VOC</database>", "\t</source>",
        "\t<size>", f"\t\t<width>{width}</width>", f"\t\t<height>{height}</height>", "\t\t<depth>3</depth>", "\t</size>",
        "\t<segmented>0</segmented>",
    ]
    for o in objects:
        x1, y1, x2, y2 = o["box"]
        parts += [
            "\t<object>", f"\t\t<name>{o['name']}</name>", "\t\t<pose>Unspecified</pose>",
            f"\t\t<truncated>{o['truncated']}</truncated>", f"\t\t<difficult>{o['difficult']}</difficult>",
            "\t\t<bndbox>", f"\t\t\t<xmin>{x1}</xmin>", f"\t\t\t<ymin>{y1}</ymin>",
            f"\t\t\t<xmax>{x2}</xmax>", f"\t\t\t<ymax>{y2}</ymax>", "\t\t</bndbox>", "\t</object>",
        ]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


def make_toy_voc(root, train: int, val: int, seed: int = 0, spec: ToySpec = ToySpec()) -> Path:
    """Write the toy VOC under ``root`` and return its year folder ``root/VOCdevkit/VOCtoy``. Labels are dealt per
    split from exact class quotas; every picture has its own random stream ``(seed, split, index)``, so the result
    depends only on the arguments."""
    if train < 0 or val < 0 or train + val == 0:
        raise DataError(f"make_toy_voc needs a positive number of images, got train={train}, val={val}")
    if not 0 <= spec.min_objects <= spec.max_objects:
        raise DataError(f"need 0 <= min_objects <= max_objects, got {spec.min_objects}, {spec.max_objects}")
    year_dir = Path(root) / "VOCdevkit" / YEAR
    for sub in ("Annotations", "JPEGImages"):
        (year_dir / sub).mkdir(parents=True, exist_ok=True)
    (year_dir / "classes.txt").write_text("\n".join(TOY_CLASSES) + "\n")
    for code, (split, count) in enumerate([("train", train), ("val", val)]):
        split_rng = np.random.default_rng([seed, code])
        per_image = split_rng.integers(spec.min_objects, spec.max_objects + 1, count)
        labels = np.repeat(np.arange(len(TOY_CLASSES)), class_quotas(int(per_image.sum()), len(TOY_CLASSES), spec.imbalance))
        split_rng.shuffle(labels)
        starts = np.concatenate([[0], np.cumsum(per_image)])
        names = []
        for i in range(count):
            name = f"{split}_{i + 1:06d}"
            image, objects = make_image(np.random.default_rng([seed, code, i]), labels[starts[i]:starts[i + 1]].tolist(), spec)
            image.save(year_dir / "JPEGImages" / f"{name}.jpg", quality=spec.jpeg_quality)
            (year_dir / "Annotations" / f"{name}.xml").write_text(annotation_xml(f"{name}.jpg", *image.size, objects))
            names.append(name)
        write_split(year_dir, split, names)
    return year_dir


def ensure_toy_voc(parent: Path, train: int, val: int, seed: int = 0, spec: ToySpec = ToySpec()) -> Path:
    """The toy VOC for these settings under ``parent/<key>``, generated on first use and reused after; returns the
    root holding ``VOCdevkit``. Built in a temporary folder and renamed: an interrupted run leaves no half tree."""
    settings = {"version": VERSION, "train": train, "val": val, "seed": seed, **asdict(spec)}
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    root = Path(parent) / f"toy-{key}"
    if split_file(root / "VOCdevkit" / YEAR, "val").exists():
        return root
    tmp = Path(parent) / f".toy-{key}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    make_toy_voc(tmp, train, val, seed, spec)
    (tmp / "settings.json").write_text(json.dumps(settings, indent=1) + "\n")
    try:
        tmp.rename(root)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def make_voc_like(root, sets: dict[str, dict[str, int]], seed: int = 0, size: tuple[int, int] = (500, 375),
                  max_objects: int = 4) -> Path:
    """A small tree shaped like PASCAL VOC, for tests and GPU checks without a download: the year folders and
    splits of ``sets`` (``{"VOC2007": {"trainval": 8, "test": 6}}``), VOC's 20 class names (no ``classes.txt``),
    ``size`` JPEGs with 1 to ``max_objects`` objects each, a filled shape in its class's colour, classes drawn from
    a long tail. Returns the root holding ``VOCdevkit``; same arguments, same files."""
    width, height = size
    weights = class_quotas(1000, len(VOC_CLASSES), 20.0) / 1000
    palette = np.random.default_rng(12345).integers(30, 226, (len(VOC_CLASSES), 3))
    for y, (year, splits) in enumerate(sets.items()):
        year_dir = Path(root) / "VOCdevkit" / year
        for sub in ("Annotations", "JPEGImages"):
            (year_dir / sub).mkdir(parents=True, exist_ok=True)
        for code, (split, count) in enumerate(splits.items()):
            names = []
            for i in range(count):
                rng = np.random.default_rng([seed, y, code, i])
                name = f"{y + 1}{code}{i:04d}"
                image = Image.fromarray(background(rng, height, width))
                draw = ImageDraw.Draw(image)
                objects = []
                for label in rng.choice(len(VOC_CLASSES), rng.integers(1, max_objects + 1), p=weights):
                    w, h = rng.integers(40, width // 2), rng.integers(40, height // 2)
                    x1, y1 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
                    shape = draw.ellipse if label % 2 else draw.rectangle
                    shape((x1, y1, x1 + w - 1, y1 + h - 1), fill=tuple(int(c) for c in palette[label]))
                    objects.append({"name": VOC_CLASSES[label], "box": (x1 + 1, y1 + 1, x1 + w, y1 + h),
                                    "truncated": 0, "difficult": 0})
                image.save(year_dir / "JPEGImages" / f"{name}.jpg", quality=90)
                (year_dir / "Annotations" / f"{name}.xml").write_text(
                    annotation_xml(f"{name}.jpg", width, height, objects, folder=year))
                names.append(name)
            write_split(year_dir, split, names)
    return Path(root)
