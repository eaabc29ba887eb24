"""The reference checkpoint the chapters load: in step with the quick profile, and its recorded
evaluation reproducible."""
import pytest
import torch

from detrlib.checkpoint import REFERENCE, load_trained, reference_checkpoint
from detrlib.config import get_profile


def test_reference_matches_the_quick_profile(monkeypatch):
    monkeypatch.delenv("DETRLIB_PROFILE", raising=False)
    path = reference_checkpoint("quick")
    assert path.stat().st_size < 20 * 2**20, "the reference checkpoint must stay under 20 MB"
    import hashlib

    assert hashlib.sha256(path.read_bytes()).hexdigest() == REFERENCE["quick"][1], "update REFERENCE's SHA-256"
    model, cfg, state = load_trained(path)
    quick = get_profile("quick")
    assert cfg.model == quick.model, "retrain the reference (checkpoints/README.md) after changing the quick model"
    assert cfg.data.toy_seed == quick.data.toy_seed and cfg.data.val_sets == quick.data.val_sets


@pytest.mark.slow
def test_reference_evaluation_is_reproducible(tmp_path, monkeypatch):
    monkeypatch.setenv("DETRLIB_HOME", str(tmp_path))
    from detrlib.data import build_dataset, build_loader
    from detrlib.engine import evaluate_model
    from detrlib.model import PostProcess

    model, cfg, state = load_trained(reference_checkpoint("quick"))
    val = build_dataset(cfg.data, "val")
    loader = build_loader(val, cfg.train.batch_size, train=False)  # the batches training evaluated with
    metrics = evaluate_model(model, val, loader, PostProcess(), torch.device("cpu"))
    assert metrics["AP50"] == pytest.approx(state["metrics"]["AP50"], abs=1e-6)
    assert metrics["AP"] == pytest.approx(state["metrics"]["AP"], abs=1e-6)
