"""The generated toy VOC: a genuine VOCdevkit tree, deterministic, with VOC's difficulties."""
import hashlib

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from detrlib.data.stats import dataset_stats
from detrlib.data.toy import TOY_CLASSES, ToySpec, class_quotas, ensure_toy_voc, make_toy_voc
from detrlib.data.voc import VOCDataset


def tree_digest(root):
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in files}


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path):
    make_toy_voc(tmp_path / "a", 12, 4, seed=3)
    make_toy_voc(tmp_path / "b", 12, 4, seed=3)
    make_toy_voc(tmp_path / "c", 12, 4, seed=4)
    a, b, c = (tree_digest(tmp_path / x) for x in "abc")
    assert len(a) == 1 + 2 + 2 * 16  # classes.txt, two split files, a JPEG and an XML per image
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_the_tree_is_voc_and_the_reader_loads_it(tmp_path):
    year_dir = make_toy_voc(tmp_path, 10, 5, seed=0)
    assert year_dir == tmp_path / "VOCdevkit" / "VOCtoy"
    assert (year_dir / "classes.txt").read_text().split() == list(TOY_CLASSES)
    assert (year_dir / "ImageSets" / "Main" / "val.txt").read_text().split() == [f"val_{i:06d}" for i in range(1, 6)]
    ds = VOCDataset([(year_dir, "train")])
    assert ds.classes == TOY_CLASSES and len(ds) == 10
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.shape[0] == 3 and max(image.shape[1:]) == 128
        assert ((target["boxes"] > 0) & (target["boxes"] <= 1)).all()


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    return VOCDataset([(make_toy_voc(root, 400, 0, seed=0), "train")])


def test_it_has_the_difficulties_the_issue_asks_for(toy):
    stats = dataset_stats(toy)
    counts = [stats["per_class"][c]["objects"] for c in TOY_CLASSES]
    assert len(TOY_CLASSES) >= 10 and min(counts) > 0
    assert stats["head_to_tail"] >= 10
    assert stats["small_fraction"] >= 0.2
    assert 0 < stats["difficult"] < 0.1 * stats["objects"]
    assert stats["truncated"] > 0.03 * stats["objects"]
    per_image = [len(r.labels) for r in toy.records]
    assert min(per_image) >= 1 and max(per_image) <= 6
    overlapping = 0
    for r in toy.records:
        boxes = torch.from_numpy(r.boxes)
        overlapping += bool((box_iou(boxes, boxes).triu(1) > 0).any())
    assert overlapping > 0.3 * len(toy.records)


def test_class_quotas_fall_by_the_imbalance_and_add_up():
    counts = class_quotas(1000, 12, 12.0)
    assert counts.sum() == 1000 and (np.diff(counts) <= 0).all()
    assert counts[0] / counts[-1] == pytest.approx(12, rel=0.1)


def test_spec_knobs_change_the_pictures(tmp_path):
    year_dir = make_toy_voc(tmp_path, 20, 0, seed=0, spec=ToySpec(image_size=96, min_objects=2, max_objects=2))
    ds = VOCDataset([(year_dir, "train")])
    assert all(max(r.width, r.height) == 96 for r in ds.records)
    assert all(len(r.labels) <= 2 for r in ds.records)


def test_bad_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="positive number of images"):
        make_toy_voc(tmp_path, 0, 0)
    with pytest.raises(ValueError, match="min_objects <= max_objects"):
        make_toy_voc(tmp_path, 1, 0, spec=ToySpec(min_objects=3, max_objects=2))


def test_ensure_toy_generates_once_per_setting(tmp_path):
    root = ensure_toy_voc(tmp_path, 6, 2, seed=1)
    marker = root / "VOCdevkit" / "VOCtoy" / "JPEGImages" / "train_000001.jpg"
    stamp = marker.stat().st_mtime_ns
    assert ensure_toy_voc(tmp_path, 6, 2, seed=1) == root and marker.stat().st_mtime_ns == stamp
    assert ensure_toy_voc(tmp_path, 6, 2, seed=2) != root
    assert not list(tmp_path.glob(".toy-*"))
