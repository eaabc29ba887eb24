import os
import sys
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")  # not MPLBACKEND: notebook kernels started by tests inherit the environment

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("DETRLIB_PROFILE", "smoke")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def official_checkpoint(tmp_path_factory) -> Path:
    """An official-format DETR-R50 COCO checkpoint with random values (tests/official.py), written once
    for every module that loads one."""
    from official import write_official_checkpoint

    return write_official_checkpoint(tmp_path_factory.mktemp("coco") / "detr-r50-e632da11.pth")


@pytest.fixture(scope="session")
def voc2007_at_toy_size(tmp_path_factory) -> Path:
    """A generated VOC-format tree, VOC2007 trainval (16 images) and test (8): a chapter's data in the gpu
    profile at toy size."""
    from detrlib.data.toy import make_voc_like

    return make_voc_like(tmp_path_factory.mktemp("voc2007"), {"VOC2007": {"trainval": 16, "test": 8}})


@pytest.fixture(scope="session")
def gpu_profile_at_toy_size(voc2007_at_toy_size, official_checkpoint) -> dict:
    """``DETRLIB_SET`` changes that shrink the gpu profile to toy size (small images, 2 steps, a few
    validation images, the CPU), its data :func:`voc2007_at_toy_size` and its COCO weights
    :func:`official_checkpoint`: a chapter's gpu path, run in a test."""
    return {"data.root": str(voc2007_at_toy_size), "data.download": False, "data.train_scales": [64],
            "data.max_size": 80, "data.val_size": 64, "data.val_subset": 6, "data.num_workers": 0,
            "train.batch_size": 2, "train.max_steps": 2, "train.warmup_steps": 1, "train.checkpoint_every": 0,
            "train.device": "cpu", "train.init_checkpoint": str(official_checkpoint)}
