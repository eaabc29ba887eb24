"""What a chapter does on Colab, simulated: the banner of a runtime without a GPU, the Drive cell, and
the plan that says which runs found on Drive are reused and which resume."""
import sys
import types
from pathlib import Path

import pytest
import torch

from detrlib import budget, colab
from detrlib.checkpoint import save_checkpoint
from detrlib.config import profile_settings
from detrlib.runfolder import run_dir


@pytest.fixture
def on_colab(monkeypatch):
    """A Colab runtime without a GPU: ``google.colab`` imported, with a Drive that records its mounts."""
    mounts = []
    drive = types.ModuleType("google.colab.drive")
    drive.mount = mounts.append
    package = types.ModuleType("google.colab")
    package.drive = drive
    monkeypatch.setitem(sys.modules, "google.colab", package)
    monkeypatch.setitem(sys.modules, "google.colab.drive", drive)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("DETRLIB_PROFILE", raising=False)
    return mounts


def test_a_cpu_runtime_on_colab_says_how_to_switch_and_what_runs_instead(on_colab, capsys):
    colab.gpu_runtime_banner(None)
    banner = capsys.readouterr().out
    assert "Runtime > Change runtime type > T4 GPU" in banner and "the quick profile on the CPU" in banner
    colab.gpu_runtime_banner("gpu")
    assert 'PROFILE = "quick"' in capsys.readouterr().out  # a GPU profile asked for by name cannot run here


def test_the_banner_and_the_mount_stay_silent_elsewhere(monkeypatch, tmp_path, capsys):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setenv("DETRLIB_RUNS", str(tmp_path / "runs"))
    colab.gpu_runtime_banner(None)
    assert capsys.readouterr().out == ""
    colab.mount_drive()
    assert capsys.readouterr().out.strip() == f"runs live in {tmp_path / 'runs'}"


def test_the_drive_cell_mounts_on_colab_and_says_where_runs_live(on_colab, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("DETRLIB_RUNS", str(tmp_path / "runs"))
    colab.mount_drive()
    assert on_colab == ["/content/drive"]
    assert "runs live in" in capsys.readouterr().out

    def refuse(path):
        raise ValueError("mount failed")

    monkeypatch.setattr(sys.modules["google.colab.drive"], "mount", refuse)
    colab.mount_drive()
    said = capsys.readouterr().out
    assert "not mounted: mount failed" in said and "disconnect erases" in said


def test_a_mounted_drive_keeps_runs_and_downloads_unless_a_folder_is_named(on_colab, monkeypatch, tmp_path):
    from detrlib.config import downloads_dir, runs_dir

    monkeypatch.setattr(colab, "COLAB_DRIVE", tmp_path / "MyDrive")
    monkeypatch.setenv("DETRLIB_HOME", str(tmp_path / "vm"))
    for variable in ("DETRLIB_RUNS", "DETRLIB_DOWNLOADS"):
        monkeypatch.setenv(variable, "")
    colab.mount_drive()  # Drive refused or absent: the VM's disk
    assert runs_dir() == tmp_path / "vm" / "runs" and downloads_dir() == tmp_path / "vm" / "downloads"
    (tmp_path / "MyDrive").mkdir()
    colab.mount_drive()
    assert runs_dir() == tmp_path / "MyDrive" / "detrlib" / "runs"
    assert downloads_dir() == tmp_path / "MyDrive" / "detrlib" / "downloads"
    monkeypatch.setenv("DETRLIB_RUNS", str(tmp_path / "mine"))
    colab.mount_drive()
    assert runs_dir() == tmp_path / "mine"  # a folder the reader named stays theirs


def test_paths_are_shown_relative_to_the_checkout_or_home():
    checkout = Path(colab.__file__).resolve().parents[1]
    assert colab.shown_path(checkout / "_build" / "runs") == "_build/runs"
    assert colab.shown_path(Path.home() / ".cache" / "detrlib" / "runs") == "~/.cache/detrlib/runs"
    assert colab.shown_path("/content/drive/MyDrive/detrlib/runs") == "/content/drive/MyDrive/detrlib/runs"


def test_the_plan_says_which_runs_on_drive_are_reused_and_which_resume(monkeypatch, tmp_path):
    monkeypatch.setenv("DETRLIB_RUNS", str(tmp_path))
    cfg = profile_settings("gpu")
    fresh = budget.chapter_plan("05_denoising", cfg)
    assert "interrupted" not in fresh and "reused" not in fresh

    def leave(name: str, step: int, finished: bool) -> None:
        folder = run_dir(budget.run_config(name, cfg)) / "checkpoints"
        save_checkpoint({"model": {}, "step": step, "finished": finished, "wall_time": 60.0}, folder, step)

    leave("vanilla", cfg.train.max_steps, finished=True)
    leave("denoising", 300, finished=False)
    plan = budget.chapter_plan("05_denoising", cfg)
    assert "run vanilla        finished earlier, reused: 0 min" in plan
    assert "run denoising      interrupted at step 300, resumes from its checkpoint" in plan
    minutes = lambda text: int(text.rsplit("expected: about ", 1)[1].split()[0])  # noqa: E731
    assert minutes(plan) < minutes(fresh)
