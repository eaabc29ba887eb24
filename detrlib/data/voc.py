"""PASCAL VOC in its VOCdevkit layout, read into DETR's dataset item.

A year folder (``VOCdevkit/VOC2007``, ``VOCdevkit/VOCtoy``) holds ``Annotations/<id>.xml``, ``JPEGImages/<id>.jpg``
and ``ImageSets/Main/<split>.txt`` (one id a line). A dataset combines one or more ``(year_dir, split)`` sets, e.g.
VOC2007 and VOC2012 ``trainval``. The classes are the 20 of VOC in the standard order, unless the year folder has a
``classes.txt`` (one name a line, in label order), as the generated toy VOC does.

Boxes: VOC writes pixel corners, 1-based and inclusive (``xmin=1`` is the first pixel column, sometimes as a float).
They are read as 0-based continuous corners ``(xmin - 1, ymin - 1, xmax, ymax)``, so a box covering pixels 1..10 is
10 pixels wide. The item's target holds them as normalized ``cx, cy, w, h`` in the transformed image, as DETR wants.
"""
from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import numpy as np
import torch
from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException
from PIL import Image, ImageOps
from torchvision import tv_tensors
from torchvision.ops import box_convert
from torchvision.transforms.v2 import functional as F

from detrlib.errors import DataError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
# Where each VOC class sits among the official COCO DETR's 91 class logits (COCO category ids):
# COCO has all 20 (aeroplane is COCO's airplane, sofa its couch, tvmonitor its tv, ...).
VOC_IN_COCO = (5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72)
CLASS_FILE = "classes.txt"


class UnusableImage(DataError):
    """A readable image that cannot be used: over PIL's decompression-bomb limit, or so thin that
    resizing leaves it less than a pixel across. A dataset skips and counts it; predict refuses it."""


class DataWarning(UserWarning):
    """Records were skipped or boxes repaired while reading a VOC-format tree, or PIL reported
    damage in a picture it could still decode."""


def abbreviate(names, keep: int = 3) -> str:
    """A long list of names in one line: ``a, b, c, ..., z``."""
    names = list(names)
    return ", ".join(names) if len(names) <= keep + 1 else ", ".join(names[:keep]) + f", ..., {names[-1]}"


@dataclass
class VOCRecord:
    """One image and all its objects, difficult ones included, as written in its XML. ``boxes`` are float32
    ``[N, 4]`` corners ``x1, y1, x2, y2`` in 0-based pixels of the original image (EXIF orientation applied): what
    an evaluator needs for COCO-style ground truth."""

    image_id: int
    name: str
    image_path: Path
    xml_path: Path
    width: int
    height: int
    orientation: int  # EXIF orientation tag, 1 = upright
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    truncated: np.ndarray


@dataclass
class ScanReport:
    """What reading a tree found: repaired boxes, skipped records and why."""

    images: int = 0
    objects: int = 0
    negatives: int = 0  # images kept with no object
    clipped: int = 0  # boxes reaching outside the image, clipped to it
    dropped: int = 0  # zero-area or inverted boxes, left out
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason): bad records (strict=False) and unusable images

    def summary(self) -> str:
        lines = [f"{self.images} images, {self.objects} objects, {self.negatives} images without objects; "
                 f"{self.clipped} boxes clipped to their image, {self.dropped} zero-area or inverted boxes dropped"]
        if self.skipped:
            lines.append(f"{len(self.skipped)} records skipped:")
            lines += [f"  {path}: {reason}" for path, reason in self.skipped[:20]]
            if len(self.skipped) > 20:
                lines.append(f"  ... and {len(self.skipped) - 20} more")
        return "\n".join(lines)


def read_classes(year_dir: Path) -> tuple[str, ...]:
    """The class list of a year folder: its ``classes.txt`` if present, else the 20 VOC classes."""
    path = Path(year_dir) / CLASS_FILE
    if not path.exists():
        return VOC_CLASSES
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if not names or len(set(names)) != len(names):
        raise DataError(f"{path}: expected one distinct class name a line, got {list(names)}")
    return names


def leaves_folder(name: str) -> bool:
    """Whether the relative path ``name``, read from data or a config, would lead out of the folder it is joined
    to (absolute, or with a ``..`` part). Checked by name, so a dataset whose folders are symlinks elsewhere reads."""
    path = PurePath(name)
    return path.is_absolute() or bool(path.drive) or ".." in path.parts


def split_file(year_dir, split: str) -> Path:
    """The file listing the image ids of a split: ``<year_dir>/ImageSets/Main/<split>.txt``."""
    return Path(year_dir) / "ImageSets" / "Main" / f"{split}.txt"


def write_split(year_dir, split: str, names) -> None:
    """Write a split file, one image id a line, to a temporary file renamed into place."""
    path = split_file(year_dir, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{n}\n" for n in names))
    tmp.replace(path)


def read_split(year_dir: Path, split: str) -> list[str]:
    """Image ids listed in the split's :func:`split_file`."""
    year_dir = Path(year_dir)
    if not year_dir.is_dir():
        raise DataError(f"VOC year folder {year_dir} not found: download VOC (python -m detrlib download "
                        f"--root ROOT) or generate the toy VOC (python -m detrlib make-toy --root ROOT)")
    path = split_file(year_dir, split)
    if not path.exists():
        have = sorted(p.stem for p in path.parent.glob("*.txt") if "_" not in p.stem) if path.parent.is_dir() else []
        raise DataError(f"split file {path} not found; splits in {year_dir.name}: {', '.join(have) or 'none'}")
    # VOC's per-class files (aeroplane_train.txt) have a second column; the plain split has ids only
    ids = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            ids.append(line.split()[0])
            if leaves_folder(ids[-1]):
                raise DataError(f"{path}, line {number}: the image id {ids[-1]!r} is a path out of {year_dir}; an id "
                                "names Annotations/<id>.xml inside the year folder: fix the split file")
    return ids


def _text(node, tag: str, path: Path, default: str | None = None) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        if default is not None:
            return default
        raise DataError(f"{path}: <{node.tag}> has no <{tag}>")
    return child.text.strip()


def _number(node, tag: str, path: Path, default: str | None = None) -> float:
    text = _text(node, tag, path, default)
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{path}: <{tag}> is {text!r}, not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{path}: <{tag}> is {text!r}, not a finite number: fix or remove the annotation")
    return value


def parse_annotation(path: Path, classes=VOC_CLASSES) -> dict:
    """Parse one VOC XML file with defusedxml into ``{"filename", "width", "height", "objects": [{"name", "label",
    "box", "difficult", "truncated"}]}``, ``box`` the raw 1-based corners as written. ``<part>`` boxes (a person's
    head, hands, feet) belong to their object and are not objects themselves."""
    path = Path(path)
    try:
        root = ElementTree.parse(path).getroot()
    except DefusedXmlException as e:
        raise DataError(f"{path}: rejected, the XML declares entities or a DTD ({type(e).__name__}), "
                        "which VOC annotations never do (an XML bomb?): regenerate or remove the file") from None
    except ElementTree.ParseError as e:
        raise DataError(f"{path}: malformed XML ({e}): re-download or remove the file") from None
    if root.tag != "annotation":
        raise DataError(f"{path}: the root element is <{root.tag}>, not <annotation>")
    size = root.find("size")
    width = int(_number(size, "width", path, "0")) if size is not None else 0
    height = int(_number(size, "height", path, "0")) if size is not None else 0
    index = {name: i for i, name in enumerate(classes)}
    objects = []
    for obj in root.findall("object"):  # direct children only: <part> sits inside <object>
        name = _text(obj, "name", path)
        if name not in index:
            raise DataError(f"{path}: unknown class name {name!r}; this dataset's classes are "
                            f"{', '.join(classes)} (a custom class list goes in {CLASS_FILE} of the year folder)")
        box = obj.find("bndbox")
        if box is None:
            raise DataError(f"{path}: object {name!r} has no <bndbox>")
        objects.append({"name": name, "label": index[name],
                        "box": tuple(_number(box, k, path) for k in ("xmin", "ymin", "xmax", "ymax")),
                        "difficult": bool(int(_number(obj, "difficult", path, "0"))),
                        "truncated": bool(int(_number(obj, "truncated", path, "0")))})
    return {"filename": _text(root, "filename", path, ""), "width": width, "height": height, "objects": objects}


def image_header(path: Path) -> tuple[int, int, int]:
    """(width, height, EXIF orientation) of an image as displayed, reading only its header. A JPEG must end with
    its end-of-image marker; one that does not was cut short."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"image {path} not found: its annotation has no picture (re-download, or remove "
                        "the id from the split file)")
    try:
        with _pil_reports(path), Image.open(path) as im:
            width, height = im.size
            orientation = im.getexif().get(0x0112, 1)
            fmt = im.format
    except (OSError, SyntaxError) as e:
        raise DataError(f"image {path} cannot be read ({e}): re-download or remove it") from None
    if fmt == "JPEG":
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 64))
            if b"\xff\xd9" not in f.read():
                raise DataError(f"image {path} is truncated (no JPEG end marker): re-download or remove it")
    return (height, width, orientation) if orientation in (5, 6, 7, 8) else (width, height, orientation)


class _pil_reports:
    """Within it, a picture over PIL's decompression-bomb limit raises :class:`UnusableImage`, and whatever else
    PIL warns about (damaged data it could still decode) comes back as a :class:`DataWarning` naming the file."""

    def __init__(self, path: Path):
        self.path, self.caught = path, warnings.catch_warnings(record=True)

    def __enter__(self):
        self.reports = self.caught.__enter__()
        warnings.simplefilter("always")
        warnings.simplefilter("error", Image.DecompressionBombWarning)

    def __exit__(self, kind, err, tb):
        self.caught.__exit__(kind, err, tb)
        if isinstance(err, (Image.DecompressionBombWarning, Image.DecompressionBombError)):
            raise UnusableImage(f"image {self.path} has more pixels than PIL's limit of {Image.MAX_IMAGE_PIXELS:,} "
                                "(a decompression bomb?): remove it, or raise PIL.Image.MAX_IMAGE_PIXELS if it is "
                                "genuine") from None
        for report in self.reports:
            warnings.warn(f"image {self.path}: {report.message} (PIL still decoded it; the picture may be "
                          "damaged: re-download or remove it)", DataWarning, stacklevel=3)
        return False


def to_rgb(im: Image.Image) -> Image.Image:
    """An RGB image with the content of any PIL mode: 16-bit (``I;16``), 32-bit integer (``I``) and
    float (``F``) pictures are scaled to 8 bits, not clipped to white (or black)."""
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I") or im.mode == "F":
        values = np.nan_to_num(np.asarray(im, dtype=np.float64))
        # the smallest usual full scale that holds the values: [0, 1] floats, 8 or 16 bits
        scales = {"F": (1.0, 255.0), "I": (255.0, 65535.0)}.get(im.mode, (65535.0,))  # I;16, I;16B, ...
        top = next((t for t in scales if values.min() >= 0 and values.max() <= t), None)
        if top is None:  # any other range: stretch it
            values, top = values - values.min(), max(values.max() - values.min(), 1e-12)
        return Image.fromarray(np.round(values * (255.0 / top)).clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode in ("P", "PA"):  # palette transparency converts cleanly only through RGBA
        im = im.convert("RGBA")
    return im.convert("RGB")


def image_file(path) -> Path:
    """``path`` if it is a file, else a :class:`DataError` saying what it is."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image {path} not found" if not path.exists() else f"{path} is a folder, not an image")
    return path


def load_image(path: Path, orientation: int | None = None) -> Image.Image:
    """An RGB PIL image with its EXIF orientation applied, whatever its mode and bit depth (L, P, RGBA, CMYK,
    16-bit, float: :func:`to_rgb`). ``orientation=1`` (known from a scan) skips reading the EXIF data again."""
    path = image_file(path)
    try:
        with _pil_reports(path), Image.open(path) as im:
            if orientation != 1:
                im = ImageOps.exif_transpose(im)
            im.load()
            return to_rgb(im)
    except (OSError, SyntaxError) as e:
        raise DataError(f"image {path} cannot be decoded ({e}): re-download or remove it") from None


def too_thin(width: int, height: int, max_size: int) -> bool:
    """Whether resizing to a longer side of at most ``max_size`` (``v2.RandomShortestSize``, as the
    transforms do) leaves the picture less than a pixel across."""
    short, long = sorted((width, height))
    return int(short * (max_size / long)) < 1


def check_size(path: Path, width: int, height: int, max_size: int) -> None:
    """Raise :class:`UnusableImage` for a picture the transforms cannot resize (:func:`too_thin`)."""
    if too_thin(width, height, max_size):
        raise UnusableImage(f"image {path} is {width} x {height} pixels: too thin to resize to a longer side of "
                            f"{max_size} (data.max_size) and keep a pixel across; crop or remove it")


def read_record(year_dir: Path, name: str, classes, image_id: int, report: ScanReport,
                max_size: int | None = None) -> VOCRecord:
    """Parse one image's XML, check its picture (:func:`check_size` when ``max_size`` is given),
    clip boxes to the image and drop degenerate ones."""
    xml_path = Path(year_dir) / "Annotations" / f"{name}.xml"
    if not xml_path.exists():
        raise DataError(f"annotation {xml_path} not found for id {name!r} of the split file")
    ann = parse_annotation(xml_path, classes)
    if leaves_folder(ann["filename"]):
        raise DataError(f"{xml_path}: <filename> {ann['filename']!r} leads out of {Path(year_dir) / 'JPEGImages'}; "
                        "an annotation names a picture in that folder: fix or remove the annotation")
    image_path = Path(year_dir) / "JPEGImages" / (ann["filename"] or f"{name}.jpg")
    if not image_path.exists():
        image_path = Path(year_dir) / "JPEGImages" / f"{name}.jpg"
    width, height, orientation = image_header(image_path)
    if max_size:
        check_size(image_path, width, height, max_size)
    boxes, keep = [], []
    for obj in ann["objects"]:
        x1, y1, x2, y2 = obj["box"]
        x1, y1 = x1 - 1, y1 - 1  # 1-based inclusive corners -> 0-based continuous
        cx1, cy1 = min(max(x1, 0), width), min(max(y1, 0), height)
        cx2, cy2 = min(max(x2, 0), width), min(max(y2, 0), height)
        if cx2 <= cx1 or cy2 <= cy1:
            report.dropped += 1
            continue
        report.clipped += (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2)
        boxes.append((cx1, cy1, cx2, cy2))
        keep.append(obj)
    return VOCRecord(
        image_id=image_id, name=name, image_path=image_path, xml_path=xml_path, width=width, height=height,
        orientation=orientation, boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.array([o["label"] for o in keep], dtype=np.int64),
        difficult=np.array([o["difficult"] for o in keep], dtype=bool),
        truncated=np.array([o["truncated"] for o in keep], dtype=bool),
    )


def scan(sets, classes, strict: bool = True, max_size: int | None = None) -> tuple[list[VOCRecord], ScanReport]:
    """Read every record of the ``(year_dir, split)`` sets. With ``strict=False`` a bad record is
    skipped and listed in the report instead of raising; an :class:`UnusableImage` always is."""
    records, report = [], ScanReport()
    for year_dir, split in sets:
        for name in read_split(year_dir, split):
            try:
                record = read_record(year_dir, name, classes, len(records), report, max_size)
            except DataError as e:
                if strict and not isinstance(e, UnusableImage):
                    raise
                report.skipped.append((str(Path(year_dir) / "Annotations" / f"{name}.xml"), str(e)))
                continue
            records.append(record)
    report.images = len(records)
    report.objects = sum(len(r.labels) for r in records)
    report.negatives = sum(len(r.labels) == 0 for r in records)
    return records, report


class VOCDataset(torch.utils.data.Dataset):
    """One or more VOC sets, ``(year_dir, split)`` pairs, as DETR items ``(image, target)``.

    ``transforms`` is a ``torchvision.transforms.v2`` callable taking ``(PIL image, {"boxes": BoundingBoxes,
    "labels", "difficult", "truncated"})`` (see :mod:`detrlib.data.transforms`); without one the image is only
    converted to a float tensor in [0, 1]. Difficult objects are left out of the targets unless ``keep_difficult``;
    they stay in :attr:`records`, which evaluation reads. ``max_size``, the transforms' longest side, skips (and
    counts) pictures too thin to resize.

    The target: ``boxes`` float ``[N, 4]`` normalized cx, cy, w, h in the transformed image, ``labels`` int64
    ``[N]`` indexing :attr:`classes`, ``image_id`` (the index), ``orig_size`` and ``size`` as ``(h, w)`` tensors,
    ``difficult`` and ``truncated`` bool ``[N]``.
    """

    def __init__(self, sets, transforms=None, classes=None, keep_difficult: bool = False, strict: bool = True,
                 max_size: int | None = None):
        self.sets = [(Path(year_dir), split) for year_dir, split in sets]
        if not self.sets:
            raise DataError("VOCDataset needs at least one (year_dir, split) set")
        if classes is None:
            found = {read_classes(year_dir) for year_dir, _ in self.sets}
            if len(found) > 1:
                raise DataError(f"the sets {self.sets} have different class lists ({CLASS_FILE}): combine "
                                "only trees with the same classes, or pass classes=")
            classes = found.pop()
        self.classes = tuple(classes)
        self.transforms = transforms
        self.keep_difficult = keep_difficult
        self.records, self.report = scan(self.sets, self.classes, strict, max_size)
        if self.report.skipped or self.report.clipped or self.report.dropped:
            warnings.warn(f"reading {self.describe_sets()}: {self.report.summary()}", DataWarning, stacklevel=2)
        if not self.records:
            raise DataError(f"{self.describe_sets()} holds no images: the split files are empty"
                            + (" or every record was skipped:\n" + self.report.summary() if self.report.skipped else ""))

    def describe_sets(self) -> str:
        return " + ".join(f"{year_dir}:{split}" for year_dir, split in self.sets)

    def __len__(self) -> int:
        return len(self.records)

    def class_counts(self, difficult: bool = False) -> Counter:
        """Objects per class name; ``difficult=True`` counts the difficult ones instead."""
        counts = Counter({name: 0 for name in self.classes})
        for r in self.records:
            for label in r.labels[r.difficult == difficult]:
                counts[self.classes[label]] += 1
        return counts

    def __getitem__(self, index: int):
        r = self.records[index]
        image = load_image(r.image_path, r.orientation)
        if image.size != (r.width, r.height):
            raise DataError(f"image {r.image_path} changed since it was scanned: rebuild the dataset")
        keep = np.ones(len(r.labels), dtype=bool) if self.keep_difficult else ~r.difficult
        target = {
            "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(r.boxes[keep]), format="XYXY",
                                              canvas_size=(r.height, r.width)),
            "labels": torch.from_numpy(r.labels[keep]),
            "difficult": torch.from_numpy(r.difficult[keep]),
            "truncated": torch.from_numpy(r.truncated[keep]),
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        else:
            image = F.to_dtype(F.to_image(image), torch.float32, scale=True)
        h, w = image.shape[-2:]
        boxes = box_convert(target["boxes"].as_subclass(torch.Tensor), "xyxy", "cxcywh")
        return image.as_subclass(torch.Tensor), {
            "boxes": boxes / torch.tensor([w, h, w, h], dtype=torch.float32), "labels": target["labels"],
            "image_id": r.image_id, "orig_size": torch.tensor([r.height, r.width]), "size": torch.tensor([h, w]),
            "difficult": target["difficult"], "truncated": target["truncated"],
        }


def devkit_dir(root) -> Path:
    """The ``VOCdevkit`` folder of a root: ``root/VOCdevkit``, or ``root`` itself if it is one."""
    root = Path(root).expanduser()
    if (root / "VOCdevkit").is_dir():
        return root / "VOCdevkit"
    if root.name == "VOCdevkit" and root.is_dir():
        return root
    raise DataError(f"no VOCdevkit folder in {root}: download VOC (python -m detrlib download --root {root}) "
                    f"or generate the toy VOC (python -m detrlib make-toy --root {root})")


def subset_sets(sets, size: int, seed: int = 0) -> list[tuple[Path, str]]:
    """A fixed random subset of ``size`` images of the ``(year_dir, split)`` sets, drawn once by
    ``seed`` and written as split files ``<split>-subset<size>-s<seed>`` next to the originals; the
    sets themselves when they hold no more than ``size`` images."""
    ids = [(year_dir, split, name) for year_dir, split in sets for name in read_split(year_dir, split)]
    if len(ids) <= size:
        return list(sets)
    chosen = set(np.random.default_rng(seed).choice(len(ids), size, replace=False).tolist())
    subsets = []
    for year_dir, split in sets:
        name = f"{split}-subset{size}-s{seed}"
        if not split_file(year_dir, name).exists():
            write_split(year_dir, name, [n for i, (y, s, n) in enumerate(ids) if i in chosen and (y, s) == (year_dir, split)])
        subsets.append((Path(year_dir), name))
    return subsets


def parse_sets(root, specs) -> list[tuple[Path, str]]:
    """``"VOC2007:trainval"`` strings to ``(year_dir, split)`` pairs under ``root``'s VOCdevkit.
    A bare ``"trainval"`` means that split of every year folder that has it."""
    devkit = devkit_dir(root)
    if isinstance(specs, str):
        specs = [specs]
    sets = []
    for spec in specs:
        year, sep, split = spec.rpartition(":")
        if any(leaves_folder(part) or "/" in part or "\\" in part or part == "." for part in (year, split) if part):
            raise DataError(f"the set {spec!r} names a path, not a year folder and a split of {devkit}: write it as "
                            "YEAR:split, e.g. VOC2007:trainval")
        if sep:
            sets.append((devkit / year, split))
            continue
        found = [(d, split) for d in sorted(devkit.iterdir()) if split_file(d, split).exists()]
        if not found:
            raise DataError(f"no year folder in {devkit} has {split_file('', split)}; "
                            "name a set as YEAR:split, e.g. VOC2007:trainval")
        sets += found
    return sets
