"""Small hand-made VOC trees for the data tests."""
from pathlib import Path

import numpy as np
from PIL import Image


def obj(name, box, difficult=0, truncated=0, extra=""):
    x1, y1, x2, y2 = box
    return (f"<object><name>{name}</name><pose>Left</pose><truncated>{truncated}</truncated>"
            f"<difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
            f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox>{extra}</object>")


def xml(name, width, height, objects=()):
    return (f"<annotation><folder>VOC2007</folder><filename>{name}.jpg</filename>"
            f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
            + "".join(objects) + "</annotation>")


def write_image(path: Path, width: int, height: int, mode: str = "RGB", fmt: str = "JPEG", **save):
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = {"RGB": (200, 30, 30), "L": 128, "P": 3, "RGBA": (10, 20, 30, 128), "CMYK": (0, 200, 200, 0)}[mode]
    Image.new(mode, (width, height), colour).save(path, fmt, **save)


def write_voc(root: Path, year: str = "VOC2007", split: str = "train", images=None, classes=None) -> Path:
    """``images``: {id: (width, height, [object xml, ...])}; writes JPEGs, XMLs and the split file."""
    year_dir = Path(root) / "VOCdevkit" / year
    (year_dir / "Annotations").mkdir(parents=True, exist_ok=True)
    (year_dir / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    images = images if images is not None else {"000001": (60, 40, [obj("dog", (11, 6, 40, 30))])}
    for name, (w, h, objects) in images.items():
        write_image(year_dir / "JPEGImages" / f"{name}.jpg", w, h)
        (year_dir / "Annotations" / f"{name}.xml").write_text(xml(name, w, h, objects))
    (year_dir / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{n}\n" for n in images))
    if classes:
        (year_dir / "classes.txt").write_text("\n".join(classes) + "\n")
    return year_dir


def write_broken_jpeg(path: Path) -> Path:
    """A noise JPEG whose body is overwritten with noise: its header and end marker are whole, and
    PIL stops decoding it with "broken data stream"."""
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rng.random((96, 128, 3)) * 255).astype(np.uint8)).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[:800] + rng.integers(0, 256, 2000, dtype=np.uint8).tobytes() + data[2800:])
    return path
