"""Transforms move boxes with the pixels; batching pads and masks."""
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from detrlib.config import DataConfig
from detrlib.data.batching import class_repeat_rate, collate, repeat_factors
from detrlib.data.transforms import RandomSizeCrop, build_train_transforms, build_val_transforms, denormalize
from detrlib.data.voc import VOCDataset
from vocfiles import obj, write_voc


def sample(width=100, height=50):
    image = tv_tensors.Image(torch.zeros(3, height, width, dtype=torch.uint8))
    image[:, 10:20, 0:30] = 255  # a white block where the box is
    target = {"boxes": tv_tensors.BoundingBoxes([[0, 10, 30, 20], [60, 30, 100, 50]], format="XYXY",
                                                canvas_size=(height, width)),
              "labels": torch.tensor([3, 7]), "difficult": torch.tensor([False, True]),
              "truncated": torch.tensor([True, False])}
    return image, target


def test_flip_mirrors_boxes():
    image, target = sample()
    flipped, t = v2.RandomHorizontalFlip(p=1)(image, target)
    assert t["boxes"].tolist() == [[70, 10, 100, 20], [0, 30, 40, 50]]
    assert flipped[0, 15, 70:].eq(255).all() and flipped[0, 15, :70].eq(0).all()


def test_train_resize_keeps_aspect_and_caps_the_longer_side():
    cfg = DataConfig(train_scales=(64, 80), max_size=120, random_crop=False)
    tf = build_train_transforms(cfg)
    for _ in range(10):
        image, t = tf(*sample())
        h, w = image.shape[1:]
        assert (h in (64, 80) or w == 120) and w == 2 * h
        assert image.dtype == torch.float32
        # the boxes scale with the image: the first box still spans 30% of the width
        assert (t["boxes"][:, 2] - t["boxes"][:, 0]).tolist() == pytest.approx([0.3 * w, 0.4 * w], abs=1)


def test_crop_cuts_boxes_and_drops_the_ones_left_outside_with_their_flags():
    torch.manual_seed(0)
    crop = v2.Compose([RandomSizeCrop(20, 40), v2.SanitizeBoundingBoxes(labels_getter=lambda s: (
        s[1]["labels"], s[1]["difficult"], s[1]["truncated"]))])
    seen_drop = False
    for _ in range(50):
        image, t = crop(*sample())
        h, w = image.shape[1:]
        assert 20 <= h <= 40 and 20 <= w <= 40
        assert len(t["boxes"]) == len(t["labels"]) == len(t["difficult"]) == len(t["truncated"])
        assert ((t["boxes"][:, 2] <= w) & (t["boxes"][:, 3] <= h) & (t["boxes"][:, :2] >= 0).all(1)).all()
        for label, difficult in zip(t["labels"].tolist(), t["difficult"].tolist()):
            assert difficult == (label == 7)
        seen_drop |= len(t["labels"]) < 2
    assert seen_drop


def test_random_crop_profile_yields_valid_targets(tmp_path):
    year_dir = write_voc(tmp_path, images={"000001": (200, 150, [obj("cat", (1, 1, 60, 60)), obj("dog", (100, 70, 200, 150))])})
    ds = VOCDataset([(year_dir, "train")], build_train_transforms(DataConfig(train_scales=(96, 128), max_size=160)))
    for _ in range(20):
        image, target = ds[0]
        assert image.shape[0] == 3 and max(image.shape[1:]) <= 160
        assert len(target["boxes"]) == len(target["labels"])
        assert ((target["boxes"] >= 0) & (target["boxes"] <= 1)).all()


def test_val_transform_is_deterministic_and_denormalize_inverts_normalize():
    tf = build_val_transforms(DataConfig(val_size=40, max_size=100))
    image, target = sample()
    a, ta = tf(image, target)
    b, _ = tf(image, target)
    assert a.shape == (3, 40, 80) and torch.equal(a, b)
    assert ta["boxes"].tolist() == [[0, 8, 24, 16], [48, 24, 80, 40]]
    resized = v2.functional.resize(image, [40, 80]).float() / 255
    assert torch.allclose(denormalize(a), resized, atol=1e-5)


def test_collate_pads_to_the_largest_and_masks_the_padding():
    batch = [(torch.ones(3, 4, 6), {"labels": torch.tensor([1]), "boxes": torch.rand(1, 4), "size": torch.tensor([4, 6])}),
             (torch.ones(3, 5, 3), {"labels": torch.tensor([2, 3]), "boxes": torch.rand(2, 4), "size": torch.tensor([5, 3])})]
    images, mask, targets = collate(batch)
    assert images.shape == (2, 3, 5, 6) and mask.shape == (2, 5, 6) and mask.dtype == torch.bool
    assert (~mask[0]).sum() == 24 and mask[0, 4].all() and not mask[0, :4].any()
    assert (~mask[1]).sum() == 15 and mask[1, :, 3:].all()
    assert images[mask.unsqueeze(1).expand_as(images)].eq(0).all()
    assert images[~mask.unsqueeze(1).expand_as(images)].eq(1).all()
    for (_, original), packed in zip(batch, targets):
        for key in original:
            assert torch.equal(original[key], packed[key])


def test_repeat_factors_follow_lvis():
    # class 0 in every image, class 1 in one image of four
    labels = [torch.tensor([0]), torch.tensor([0]), torch.tensor([0]), torch.tensor([0, 1])]
    factors = repeat_factors(labels, threshold=0.5)
    assert factors.tolist() == pytest.approx([1, 1, 1, (0.5 / 0.25) ** 0.5])
    assert repeat_factors([torch.tensor([], dtype=torch.long), torch.tensor([0])], 0.5).tolist() == [1, 1]
    rate = class_repeat_rate(labels, factors, 2)
    assert rate[1] > rate[0] >= 1
