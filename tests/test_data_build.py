"""build_dataset / build_loader from a profile, and the data commands of the command line."""
import json

import pytest
import torch

from detrlib.cli import main
from detrlib.config import get_profile
from detrlib.data import DataError, build_dataset, build_loader, data_root
from detrlib.data.toy import TOY_CLASSES
from vocfiles import obj, write_voc


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DETRLIB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_smoke_profile_builds_the_toy_once_and_batches_it(home):
    cfg = get_profile("smoke")
    train = build_dataset(cfg.data, "train")
    val = build_dataset(cfg.data, "val")
    assert (len(train), len(val)) == (cfg.data.toy_train, cfg.data.toy_val)
    assert train.classes == TOY_CLASSES and cfg.model.num_classes == len(TOY_CLASSES)
    assert len(list((home / "toy").iterdir())) == 1
    assert data_root(cfg.data) == data_root(cfg.data)
    images, mask, targets = next(iter(build_loader(train, 4, train=True)))
    assert images.shape[:2] == (4, 3) and max(images.shape[2:]) == cfg.data.max_size
    assert mask.shape == (4, *images.shape[2:]) and len(targets) == 4
    for t in targets:
        assert set(t) >= {"boxes", "labels", "image_id", "orig_size", "size", "difficult", "truncated"}
        assert t["boxes"].shape == (len(t["labels"]), 4) and t["labels"].dtype == torch.int64
    _, _, val_targets = next(iter(build_loader(val, 8, train=False)))
    assert [t["image_id"] for t in val_targets] == list(range(8))


def test_loader_with_repeat_factors_repeats_rare_images(home):
    cfg = get_profile("smoke")
    train = build_dataset(cfg.data, "train")
    loader = build_loader(train, 2, train=True, repeat_factor_t=0.5, seed=1)
    assert len(loader.sampler) > len(train)
    assert sum(len(images) for images, _, _ in loader) == 2 * len(loader)


def test_longtail_config_trains_on_the_subset(home):
    cfg = get_profile("smoke").replace(**{"data.longtail": "exp30"})
    full = build_dataset(get_profile("smoke").data, "train")
    subset = build_dataset(cfg.data, "train")
    assert len(subset) < len(full) and subset.sets[0][1] == "train-exp30-s0"


def test_empty_root_without_toy_images_is_a_clear_error(home):
    cfg = get_profile("smoke").replace(**{"data.toy_train": 0, "data.toy_val": 0})
    with pytest.raises(DataError, match="toy_train/toy_val are 0"):
        build_dataset(cfg.data, "train")


def test_make_toy_and_stats_commands(tmp_path, capsys):
    assert main(["make-toy", "--root", str(tmp_path), "--train", "30", "--val", "5", "--seed", "1"]) == 0
    assert "wrote 30 train + 5 val images" in capsys.readouterr().out
    assert main(["stats", "--data", str(tmp_path), "--split", "VOCtoy:train"]) == 0
    out = capsys.readouterr().out
    assert "images    30" in out and "head-to-tail ratio" in out and "small" in out
    assert main(["stats", "--data", str(tmp_path), "--split", "val", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["images"] == 5 and set(stats["per_class"]) == set(TOY_CLASSES)
    assert sum(stats["box_sizes"].values()) == stats["objects"]


def test_stats_counts_difficult_apart_and_reports_skipped_records(tmp_path, capsys):
    write_voc(tmp_path, images={"a": (50, 50, [obj("cat", (1, 1, 9, 9)), obj("cat", (1, 1, 49, 49), difficult=1)]),
                                "b": (50, 50, [obj("unicorn", (1, 1, 9, 9))])})
    assert main(["stats", "--data", str(tmp_path), "--split", "VOC2007:train", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["per_class"]["cat"] == {"objects": 1, "difficult": 1}
    assert stats["box_sizes"]["small"] == 1
    [record] = stats["skipped"]
    assert record["file"].endswith("b.xml") and "unknown class name 'unicorn'" in record["reason"]


def test_longtail_command_writes_the_split_and_a_plot(tmp_path, capsys):
    main(["make-toy", "--root", str(tmp_path), "--train", "60", "--val", "1"])
    plot = tmp_path / "lt.png"
    assert main(["longtail", "--data", str(tmp_path), "--split", "VOCtoy:train", "--profile", "exp40",
                 "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "train-exp40-s0.txt" in out and plot.stat().st_size > 0


def test_command_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["stats", "--data", str(tmp_path), "--split", "VOC2007:test"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("python -m detrlib stats: no VOCdevkit folder") and "Traceback" not in err


def test_bench_data_reports_both_loaders(capsys):
    assert main(["bench", "data", "--images", "24", "--workers", "0", "--passes", "1", "--batch-size", "4",
                 "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    for row in ("make-toy, 24 images", "detrlib VOCDataset", "torchvision VOCDetection", "ratio detrlib / torchvision"):
        assert row in out
