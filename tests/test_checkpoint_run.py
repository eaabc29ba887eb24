"""Run checkpoints: atomic, pruned, refusing NaN weights, falling back past a corrupt file."""
import random

import numpy as np
import pytest
import torch

from detrlib import checkpoint as ckpt
from detrlib.data.batching import epoch_batches


def state(value: float) -> dict:
    return {"model": {"w": torch.full((3,), value)}, "step": int(value)}


def test_keeps_the_newest_and_loads_the_latest(tmp_path):
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(state(step), tmp_path, step, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt-00000003.pt", "ckpt-00000004.pt"]
    assert not list(tmp_path.glob("*.tmp"))
    assert ckpt.load_latest(tmp_path)["step"] == 4


def test_corrupt_newest_falls_back_to_the_previous_with_a_warning(tmp_path):
    ckpt.save_checkpoint(state(1), tmp_path, 1)
    newest = ckpt.save_checkpoint(state(2), tmp_path, 2)
    newest.write_bytes(newest.read_bytes()[:100])  # a write cut short
    with pytest.warns(UserWarning, match="ckpt-00000002.pt is a PyTorch checkpoint that is damaged or cut short"):
        loaded = ckpt.load_latest(tmp_path)
    assert loaded["step"] == 1 and loaded["path"].endswith("ckpt-00000001.pt")


def test_never_writes_non_finite_weights(tmp_path):
    ckpt.save_checkpoint(state(1), tmp_path, 1)
    with pytest.raises(FloatingPointError, match="NaN/inf"):
        ckpt.save_checkpoint({"model": {"w": torch.tensor([1.0, float("nan")])}}, tmp_path, 2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt-00000001.pt"]


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    ckpt.save_checkpoint({"model": {}, "rng": ckpt.rng_state()}, tmp_path, 1)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.set_rng_state(ckpt.load_latest(tmp_path)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_epoch_batches_are_reproducible_sharded_and_repeat_factor_aware():
    a = epoch_batches(10, 2, seed=0, epoch=3)
    assert a == epoch_batches(10, 2, seed=0, epoch=3) and a != epoch_batches(10, 2, seed=0, epoch=4)
    assert sorted(i for batch in a for i, _ in batch) == list(range(10))
    r0, r1 = (epoch_batches(10, 2, seed=0, epoch=3, rank=r, world=2) for r in (0, 1))
    assert len(r0) == len(r1) == 2  # 10 items, global batch 4: the last 2 are dropped
    single = epoch_batches(10, 4, seed=0, epoch=3)
    assert [sorted(x + y) for x, y in zip(r0, r1)] == [sorted(b) for b in single]
    repeated = epoch_batches(4, 1, seed=0, epoch=0, factors=[3.0, 1.0, 1.0, 0.0])
    counts = np.bincount([b[0][0] for b in repeated], minlength=4)
    assert counts.tolist() == [3, 1, 1, 0]
