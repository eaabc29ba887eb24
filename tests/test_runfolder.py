"""Run folders: which files a new run refuses to write over, and a lock that a killed process leaves free."""
import json
import subprocess
import sys

import pytest
import torch

from detrlib import checkpoint as ckpt
from detrlib.config import get_profile
from detrlib.runfolder import (RunFolderError, check_new_run, claimed, check_resume, check_resumable, is_run_config, locked,
                               read_config, run_files, write_config)


def test_a_new_run_needs_an_empty_folder_and_resume_needs_a_checkpoint(tmp_path):
    check_new_run(tmp_path / "absent", resume=False)
    (tmp_path / "train.lock").touch()  # not a run file
    check_new_run(tmp_path, resume=False)
    write_config(tmp_path, get_profile("smoke"))
    (tmp_path / "metrics.jsonl").write_text("")
    assert run_files(tmp_path) == ["config.json", "metrics.jsonl"]
    with pytest.raises(RunFolderError, match="already holds a run \\(config.json, metrics.jsonl\\): pass --resume"):
        check_new_run(tmp_path, resume=False)
    check_new_run(tmp_path, resume=True)  # stopped before its first checkpoint: nothing to lose
    (tmp_path / "metrics.jsonl").write_text('{"step": 2}\n')
    with pytest.raises(RunFolderError, match="but no checkpoint to resume from: nothing was changed"):
        check_new_run(tmp_path, resume=True)
    ckpt.save_checkpoint({"model": {"w": torch.ones(1)}}, tmp_path / "checkpoints", 2)
    check_new_run(tmp_path, resume=True)
    (tmp_path / "checkpoints" / "ckpt-00000002.pt").write_bytes(b"damaged")
    with pytest.raises(RunFolderError, match="none of the checkpoints .* \\(checkpoints/ckpt-00000002.pt;"):
        check_resumable(tmp_path)


def test_a_second_holder_is_refused_and_a_killed_holder_leaves_the_folder_free(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
         "f.write('pid 1 on elsewhere'); f.flush(); print('held', flush=True); time.sleep(60)", str(tmp_path / "train.lock")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(RunFolderError, match="is in use by another training process \\(pid 1 on elsewhere\\)"):
        with locked(tmp_path):
            pass
    holder.kill()
    holder.wait()
    with locked(tmp_path):  # the operating system dropped the dead process's lock
        with pytest.raises(RunFolderError, match="in use"):
            with locked(tmp_path):
                pass
    with locked(tmp_path):  # and ours, once released
        pass


def test_a_failed_write_leaves_no_temporary_file_and_names_the_path(tmp_path, monkeypatch):
    def no_space(state, f):
        f.write(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc] PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(OSError, match="cannot write .*ckpt-00000001.pt: \\[enforce fail"):
        ckpt.save_checkpoint({"model": {"w": torch.ones(1)}}, tmp_path, 1)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "ckpt-00000002.pt.tmp").write_bytes(b"left by a killed process")
    assert ckpt.list_checkpoints(tmp_path) == []  # never taken for a checkpoint


def test_a_run_is_known_by_what_its_files_say_and_a_users_files_are_never_written_over(tmp_path):
    cfg = get_profile("smoke")
    write_config(tmp_path / "run", cfg)
    assert is_run_config(tmp_path / "run" / "config.json") and read_config(tmp_path / "run") == cfg
    (tmp_path / "legacy.json").write_text(json.dumps(cfg.to_dict()))  # written before the marker: a whole config
    assert is_run_config(tmp_path / "legacy.json")
    for text in ("{}", '{"profile": "smoke"}', "not json", "[1, 2]"):
        (tmp_path / "mine.json").write_text(text)
        assert not is_run_config(tmp_path / "mine.json"), text

    (tmp_path / "user" / "config.json").parent.mkdir()
    (tmp_path / "user" / "config.json").write_text('{"lr": 3}')
    for resume in (False, True):
        with pytest.raises(RunFolderError, match="config.json is not a detrlib run's config"):
            check_new_run(tmp_path / "user", resume)
        with pytest.raises(RunFolderError, match="nothing was changed"):
            with claimed(tmp_path / "user", resume):
                pass
    lock = tmp_path / "user" / "train.lock"
    assert sorted(p.name for p in lock.parent.iterdir()) == ["config.json"]  # refused: no lock file left either
    lock.write_text("my notes\n")
    with pytest.raises(RunFolderError, match="train.lock is not detrlib's lock file"):
        with locked(tmp_path / "user"):
            pass
    assert lock.read_text() == "my notes\n" and (tmp_path / "user" / "config.json").read_text() == '{"lr": 3}'
    lock.write_text("pid 12 on a-machine-that-crashed\n")  # detrlib's own, left by a process that died
    with locked(tmp_path / "user"):
        assert lock.read_text().startswith("pid ")


def test_a_resumed_run_may_change_its_budget_and_learning_rates_but_not_its_model(tmp_path):
    cfg = get_profile("smoke")
    saved = {"config": cfg.to_dict(), "path": "ckpt-00000003.pt"}
    check_resume(tmp_path, saved, cfg.replace(**{"train.max_steps": 9, "train.lr": 1e-5, "train.lr_schedule": "cosine",
                                                 "train.device": "cpu", "profile": "quick"}))
    with pytest.raises(RunFolderError, match=r"model.hidden_dim \(the run: 32, this command: 64\), train.batch_size "
                                             r"\(the run: 4, this command: 2\); a resumed run keeps them"):
        check_resume(tmp_path, saved, cfg.replace(**{"model.hidden_dim": 64, "train.batch_size": 2}))
