"""The VOC reader: format details, and every kind of bad input with a clear error."""
import warnings

import pytest
import torch
from PIL import Image

from detrlib.data.voc import VOC_CLASSES, DataError, DataWarning, VOCDataset, parse_annotation, parse_sets
from vocfiles import obj, write_broken_jpeg, write_image, write_voc, xml


def test_voc_classes_are_the_twenty_in_standard_order():
    assert len(VOC_CLASSES) == 20
    assert VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[14] == "person" and VOC_CLASSES[-1] == "tvmonitor"
    assert list(VOC_CLASSES) == sorted(VOC_CLASSES)


def test_item_has_normalized_cxcywh_boxes_from_one_based_corners(tmp_path):
    # pixels 11..40 x 6..30 (1-based, inclusive): 30 x 25 pixels starting at 0-based (10, 5)
    year_dir = write_voc(tmp_path, images={"000001": (60, 40, [obj("dog", (11, 6, 40, 30)),
                                                              obj("person", (1.0, 1.0, 60.0, 40.0))])})
    ds = VOCDataset([(year_dir, "train")])
    image, target = ds[0]
    assert image.shape == (3, 40, 60) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    expected = torch.tensor([[(10 + 15) / 60, (5 + 12.5) / 40, 30 / 60, 25 / 40], [0.5, 0.5, 1.0, 1.0]])
    torch.testing.assert_close(target["boxes"], expected)
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("person")]
    assert target["labels"].dtype == torch.int64
    assert target["orig_size"].tolist() == [40, 60] and target["size"].tolist() == [40, 60]
    assert target["image_id"] == 0
    assert ds.records[0].boxes.tolist() == [[10, 5, 40, 30], [0, 0, 60, 40]]


def test_parts_of_a_person_are_not_objects(tmp_path):
    parts = "".join(f"<part><name>{p}</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>5</xmax><ymax>5</ymax>"
                    "</bndbox></part>" for p in ("head", "hand", "foot"))
    path = tmp_path / "a.xml"
    path.write_text(xml("a", 50, 50, [obj("person", (1, 1, 30, 40), extra=parts)]))
    ann = parse_annotation(path)
    assert [o["name"] for o in ann["objects"]] == ["person"]
    assert ann["objects"][0]["box"] == (1, 1, 30, 40)


def test_difficult_objects_are_left_out_of_targets_but_kept_in_records(tmp_path):
    year_dir = write_voc(tmp_path, images={"000001": (50, 50, [obj("cat", (1, 1, 20, 20)),
                                                              obj("dog", (5, 5, 30, 30), difficult=1, truncated=1)])})
    ds = VOCDataset([(year_dir, "train")])
    assert ds[0][1]["labels"].tolist() == [VOC_CLASSES.index("cat")]
    assert ds.records[0].difficult.tolist() == [False, True]
    assert ds.records[0].truncated.tolist() == [False, True]
    kept = VOCDataset([(year_dir, "train")], keep_difficult=True)
    assert kept[0][1]["difficult"].tolist() == [False, True]
    assert kept[0][1]["truncated"].tolist() == [False, True]


def test_sets_combine_like_07_plus_12_trainval(tmp_path):
    a = write_voc(tmp_path, "VOC2007", "trainval", {"000001": (30, 30, [obj("cat", (1, 1, 9, 9))])})
    b = write_voc(tmp_path, "VOC2012", "trainval", {"2008_000002": (30, 30, [obj("dog", (1, 1, 9, 9))]),
                                                     "2008_000003": (30, 30, [obj("cow", (1, 1, 9, 9))])})
    ds = VOCDataset(parse_sets(tmp_path, ["VOC2007:trainval", "VOC2012:trainval"]))
    assert [r.name for r in ds.records] == ["000001", "2008_000002", "2008_000003"]
    assert [ds[i][1]["image_id"] for i in range(3)] == [0, 1, 2]
    assert parse_sets(tmp_path, ["trainval"]) == [(a, "trainval"), (b, "trainval")]


def test_class_list_file_overrides_the_voc_classes(tmp_path):
    year_dir = write_voc(tmp_path, "VOCtoy", "train", {"x": (20, 20, [obj("blue_square", (1, 1, 9, 9))])},
                         classes=["red_circle", "blue_square"])
    ds = VOCDataset([(year_dir, "train")])
    assert ds.classes == ("red_circle", "blue_square") and ds[0][1]["labels"].tolist() == [1]


@pytest.mark.parametrize("mode,fmt", [("L", "JPEG"), ("CMYK", "JPEG"), ("P", "PNG"), ("RGBA", "PNG")])
def test_images_of_any_mode_become_rgb(tmp_path, mode, fmt):
    year_dir = write_voc(tmp_path, images={"000001": (24, 16, [obj("cat", (1, 1, 10, 10))])})
    write_image(year_dir / "JPEGImages" / "000001.jpg", 24, 16, mode, fmt)
    image, _ = VOCDataset([(year_dir, "train")])[0]
    assert image.shape == (3, 16, 24)


@pytest.mark.parametrize("mode, suffix", [("I;16", "png"), ("I;16", "tif"), ("I", "tif"), ("F", "tif")])
def test_deep_images_are_scaled_not_clipped(tmp_path, mode, suffix):
    """16-bit, 32-bit and float pictures keep their content: a ramp from black to full scale stays a ramp."""
    import numpy as np

    ramp = np.linspace(0, 1, 48 * 64).reshape(48, 64)
    full_scale = {"I;16": 65535, "I": 65535, "F": 1.0}[mode]
    values = (ramp * full_scale).astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode])
    year_dir = write_voc(tmp_path, images={"000001": (64, 48, [obj("cat", (1, 1, 10, 10))])})
    path = year_dir / "JPEGImages" / f"000001.{suffix}"
    Image.fromarray(values, mode if mode != "I;16" else None).save(path)
    xml_path = year_dir / "Annotations" / "000001.xml"
    xml_path.write_text(xml_path.read_text().replace("000001.jpg", path.name))
    image, _ = VOCDataset([(year_dir, "train")])[0]
    assert Image.open(path).mode == mode
    assert image.min() == 0 and image.max() == 1 and abs(image.mean().item() - 0.5) < 0.01
    assert torch.equal(image[0], image[2])  # grey


def test_decompression_bombs_and_too_thin_pictures_are_counted_skips(tmp_path, monkeypatch):
    year_dir = write_voc(tmp_path, images={"ok": (60, 40, [obj("cat", (1, 1, 10, 10))]),
                                           "big": (90, 90, [obj("cat", (1, 1, 10, 10))]),
                                           "thin": (400, 2, [obj("cat", (1, 1, 10, 2))])})
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 90 x 90 is over twice that
    with pytest.warns(DataWarning, match="2 records skipped") as caught:
        ds = VOCDataset([(year_dir, "train")], max_size=128)  # strict: these are skipped all the same
    assert [r.name for r in ds.records] == ["ok"]
    message = str(caught[0].message)
    assert "big.jpg has more pixels than PIL's limit of 3,000 (a decompression bomb?)" in message
    assert "thin.jpg is 400 x 2 pixels: too thin to resize to a longer side of 128" in message
    with pytest.warns(DataWarning, match="1 records skipped"):  # the bomb; 2 px of 400 resize to 1 px of 400
        assert len(VOCDataset([(year_dir, "train")], max_size=400).records) == 2


def test_damage_pil_reports_while_decoding_names_the_picture(tmp_path):
    year_dir = write_voc(tmp_path, images={"000001": (128, 96, [obj("cat", (1, 1, 10, 10))])})
    write_broken_jpeg(year_dir / "JPEGImages" / "000001.jpg")
    ds = VOCDataset([(year_dir, "train")])  # the header and the end marker are whole
    with pytest.raises(DataError, match="000001.jpg cannot be decoded"):
        ds[0]


def test_exif_orientation_is_applied(tmp_path):
    year_dir = write_voc(tmp_path, images={"000001": (20, 40, [obj("cat", (1, 1, 20, 10))])})
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40 x 20, shown rotated: 20 wide, 40 high
    write_image(year_dir / "JPEGImages" / "000001.jpg", 40, 20, exif=exif)
    ds = VOCDataset([(year_dir, "train")])
    image, target = ds[0]
    assert image.shape == (3, 40, 20) and target["orig_size"].tolist() == [40, 20]
    assert ds.records[0].width == 20 and ds.records[0].height == 40


# --- bad input ---------------------------------------------------------------------------------

def test_malformed_xml_names_the_file(tmp_path):
    year_dir = write_voc(tmp_path)
    (year_dir / "Annotations" / "000001.xml").write_text("<annotation><object><name>dog</name>")
    with pytest.raises(DataError, match=r"000001\.xml: malformed XML"):
        VOCDataset([(year_dir, "train")])


def test_xml_bomb_is_rejected(tmp_path):
    year_dir = write_voc(tmp_path)
    bomb = ('<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
            + "".join(f'<!ENTITY lol{i} "{("&lol%s;" % (i - 1 if i > 1 else "")) * 10}">' for i in range(1, 10))
            + ']>\n<annotation><filename>&lol9;</filename></annotation>')
    (year_dir / "Annotations" / "000001.xml").write_text(bomb)
    with pytest.raises(DataError, match=r"000001\.xml: rejected.*entities"):
        VOCDataset([(year_dir, "train")])


def test_missing_image_names_the_file(tmp_path):
    year_dir = write_voc(tmp_path)
    (year_dir / "JPEGImages" / "000001.jpg").unlink()
    with pytest.raises(DataError, match=r"000001\.jpg not found"):
        VOCDataset([(year_dir, "train")])


def noisy_jpeg(path):
    Image.effect_noise((64, 64), 60).convert("RGB").save(path, quality=95)


def test_truncated_jpeg_is_caught_by_the_scan(tmp_path):
    year_dir = write_voc(tmp_path, images={"000001": (64, 64, [obj("cat", (1, 1, 10, 10))])})
    path = year_dir / "JPEGImages" / "000001.jpg"
    noisy_jpeg(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"000001\.jpg is truncated"):
        VOCDataset([(year_dir, "train")])


def test_image_damaged_after_the_scan_fails_when_loaded(tmp_path):
    year_dir = write_voc(tmp_path, images={"000001": (64, 64, [obj("cat", (1, 1, 10, 10))])})
    path = year_dir / "JPEGImages" / "000001.jpg"
    noisy_jpeg(path)
    ds = VOCDataset([(year_dir, "train")])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"000001\.jpg cannot be decoded"):
        ds[0]


def test_unknown_class_name_says_which_and_what_to_do(tmp_path):
    year_dir = write_voc(tmp_path, images={"000001": (30, 30, [obj("unicorn", (1, 1, 9, 9))])})
    with pytest.raises(DataError, match=r"000001\.xml: unknown class name 'unicorn'.*classes\.txt"):
        VOCDataset([(year_dir, "train")])


def test_box_outside_the_image_is_clipped_and_counted(tmp_path):
    year_dir = write_voc(tmp_path, images={"000001": (50, 40, [obj("cat", (-9, 5, 80, 30))])})
    with pytest.warns(DataWarning, match="1 boxes clipped"):
        ds = VOCDataset([(year_dir, "train")])
    assert ds.report.clipped == 1
    assert ds.records[0].boxes.tolist() == [[0, 4, 50, 30]]
    assert ds[0][1]["boxes"][0, 2].item() == pytest.approx(1.0)


@pytest.mark.parametrize("box", [(10, 10, 9, 20), (10, 10, 20, 5), (60, 5, 70, 20)], ids=["inverted-x", "inverted-y", "outside"])
def test_zero_area_or_inverted_box_is_dropped_and_counted(tmp_path, box):
    year_dir = write_voc(tmp_path, images={"000001": (50, 40, [obj("cat", box), obj("dog", (1, 1, 10, 10))])})
    with pytest.warns(DataWarning, match="1 zero-area or inverted boxes dropped"):
        ds = VOCDataset([(year_dir, "train")])
    assert ds.report.dropped == 1
    assert ds[0][1]["labels"].tolist() == [VOC_CLASSES.index("dog")]


def test_image_without_objects_is_kept_as_a_negative(tmp_path):
    year_dir = write_voc(tmp_path, images={"000001": (30, 20, []), "000002": (30, 20, [obj("cat", (1, 1, 9, 9))])})
    ds = VOCDataset([(year_dir, "train")])
    assert len(ds) == 2 and ds.report.negatives == 1
    image, target = ds[0]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,) and image.shape == (3, 20, 30)


def test_missing_split_file_lists_the_splits_there_are(tmp_path):
    year_dir = write_voc(tmp_path, split="train")
    with pytest.raises(DataError, match=r"split file .*trainval\.txt not found; splits in VOC2007: train"):
        VOCDataset([(year_dir, "trainval")])


def test_missing_year_folder_says_how_to_get_one(tmp_path):
    write_voc(tmp_path)
    with pytest.raises(DataError, match="VOC2012 not found: download VOC"):
        VOCDataset(parse_sets(tmp_path, ["VOC2012:trainval"]))


def test_empty_dataset_is_an_error(tmp_path):
    year_dir = write_voc(tmp_path, images={})
    with pytest.raises(DataError, match="holds no images"):
        VOCDataset([(year_dir, "train")])


def test_non_strict_mode_skips_bad_records_and_ends_with_a_summary(tmp_path):
    images = {f"{i:06d}": (30, 30, [obj("cat", (1, 1, 9, 9))]) for i in range(6)}
    images["000004"] = (30, 30, [obj("unicorn", (1, 1, 9, 9))])
    year_dir = write_voc(tmp_path, images=images)
    (year_dir / "Annotations" / "000001.xml").write_text("<annotation>")
    (year_dir / "JPEGImages" / "000002.jpg").unlink()
    with pytest.raises(DataError):
        VOCDataset([(year_dir, "train")])
    with pytest.warns(DataWarning, match="3 records skipped") as caught:
        ds = VOCDataset([(year_dir, "train")], strict=False)
    assert [r.name for r in ds.records] == ["000000", "000003", "000005"]
    message = str(caught[0].message)
    for bad in ("000001.xml: malformed", "000002.jpg not found", "unknown class name 'unicorn'"):
        assert bad in message
    assert len(ds.report.skipped) == 3


@pytest.mark.parametrize("field, text", [("xmin", "nan"), ("ymax", "inf"), ("width", "1e400")])
def test_non_finite_numbers_name_their_xml(tmp_path, field, text):
    year_dir = write_voc(tmp_path)
    xml_path = year_dir / "Annotations" / "000001.xml"
    head, rest = xml_path.read_text().split(f"<{field}>", 1)
    xml_path.write_text(f"{head}<{field}>{text}</{field}>{rest.split(f'</{field}>', 1)[1]}")
    with pytest.raises(DataError, match=f"000001.xml: <{field}> is '{text}', not a finite number"):
        VOCDataset([(year_dir, "train")])


def test_everything_skipped_is_an_empty_dataset_error_with_the_reasons(tmp_path):
    year_dir = write_voc(tmp_path, images={"000001": (30, 30, [obj("unicorn", (1, 1, 9, 9))])})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(DataError, match="(?s)holds no images.*unicorn"):
            VOCDataset([(year_dir, "train")], strict=False)


def test_names_from_the_data_stay_inside_the_tree_but_linked_folders_still_read(tmp_path):
    year_dir = write_voc(tmp_path / "linked", images={"a": (60, 40, [obj("dog", (11, 6, 40, 30))])})
    pictures = tmp_path / "elsewhere"
    (year_dir / "JPEGImages").rename(pictures)
    (year_dir / "JPEGImages").symlink_to(pictures)  # a common layout: the pictures on another disk
    assert len(VOCDataset([(year_dir, "train")])) == 1
    xml_path = year_dir / "Annotations" / "a.xml"
    for name in ("../a.jpg", "/etc/hostname", "sub/../../a.jpg"):
        xml_path.write_text(xml("a", 60, 40, [obj("dog", (11, 6, 40, 30))]).replace("a.jpg", name))
        with pytest.raises(DataError, match=f"<filename> '{name}' leads out of"):
            VOCDataset([(year_dir, "train")])
    for spec in ("../VOC2007:train", "VOC2007:../../x", "/tmp:train", "..:train"):
        with pytest.raises(DataError, match="names a path, not a year folder and a split"):
            parse_sets(tmp_path / "linked", [spec])
