"""A denoising run end to end: `python -m detrlib train --dn-groups N` trains, logs the denoising
losses and the matching instability, and resumes to the same history."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def detrlib(*args, home):
    env = {**os.environ, "DETRLIB_HOME": str(home), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "DETRLIB_PROFILE": "smoke"}
    return subprocess.run([sys.executable, "-m", "detrlib", *args], env=env, capture_output=True, text=True,
                          check=True)


def history(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_denoising_run_logs_its_losses_and_the_matching_instability(tmp_path):
    args = ["train", "--profile", "smoke", "--dn-groups", "2", "--epochs", "3", "--max-steps", "0"]
    detrlib(*args, "--out", str(tmp_path / "run"), home=tmp_path / "home")
    rows = history(tmp_path / "run")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["dn_groups"] == 2
    assert {"train_loss_ce_dn", "train_loss_bbox_dn", "train_loss_giou_dn_0"} <= set(rows[0])
    assert "match_instability" not in rows[0]  # nothing to compare with at the first evaluation
    assert all(0 <= r["match_instability"] <= 1 for r in rows[1:])

    # the newest checkpoint lost: the run resumes after epoch 2 and finds the same instability
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "run", resumed)
    newest = sorted((resumed / "checkpoints").glob("ckpt-*.pt"))[-1]
    newest.unlink()
    assert "resumed from" in detrlib(*args, "--out", str(resumed), "--resume", home=tmp_path / "home").stdout
    assert [r.get("match_instability") for r in history(resumed)] == [r.get("match_instability") for r in rows]
