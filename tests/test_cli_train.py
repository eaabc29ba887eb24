"""The train / eval / predict commands: their options and their messages on bad input."""
import json
from pathlib import Path

import pytest
import torch

from detrlib import cli
from detrlib.config import ORDER, ConfigError


def test_options_reach_the_config(monkeypatch):
    monkeypatch.delenv("DETRLIB_PROFILE", raising=False)
    args = cli.build_parser().parse_args(
        ["train", "--profile", "quick", "--dn-groups", "0", "--dec-layers", "1", "--num-queries", "7",
         "--amp", "bf16", "--set", "train.lr_drop=3", "--set", "data.train_scales=[96, 112]"])
    cfg = cli._config_from_args(args)
    assert (cfg.model.dn_groups, cfg.model.dec_layers, cfg.model.num_queries) == (0, 1, 7)
    assert cfg.train.amp == "bf16" and cfg.train.lr_drop == 3 and cfg.data.train_scales == (96, 112)
    with pytest.raises(ConfigError, match="train.nope is not a config field"):
        cli._config_from_args(cli.build_parser().parse_args(["train", "--profile", "quick", "--set", "train.nope=1"]))


def test_settings_are_settled_in_the_order_the_readme_and_help_give(monkeypatch):
    def settle(*argv):
        return cli._config_from_args(cli.build_parser().parse_args(["train", "--profile", "quick", *argv]))

    monkeypatch.setenv("DETRLIB_SET", '{"train.max_steps": 7, "train.lr": 0.01}')
    assert (settle().train.max_steps, settle().train.lr) == (7, 0.01)  # the environment, under --profile too
    assert settle("--set", "train.max_steps=9").train.max_steps == 9
    assert settle("--max-steps", "9", "--set", "train.max_steps=9").train.max_steps == 9  # they agree
    with pytest.raises(ConfigError, match="--max-steps 9 and --set train.max_steps=8 disagree"):
        settle("--max-steps", "9", "--set", "train.max_steps=8")
    with pytest.raises(ConfigError, match=r"--train-sets VOCtoy:train and --set data.train_sets=\[\"VOCtoy:val\"\] disagree"):
        settle("--train-sets", "VOCtoy:train", "--set", 'data.train_sets=["VOCtoy:val"]')

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert ORDER in " ".join(readme.replace("`", "").replace("\n> ", " ").split())
    assert ORDER in " ".join(cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())


def test_a_folder_that_is_not_voc_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    assert cli.main(["train", "--profile", "smoke", "--data", str(tmp_path / "photos"), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "no VOCdevkit folder in" in err and "photos" in err and "make-toy" in err


def test_out_of_memory_names_the_levers(tmp_path, monkeypatch, capsys):
    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr("detrlib.engine.train", oom)
    assert cli.main(["train", "--profile", "smoke", "--batch-size", "6", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "out of memory at batch size 6" in err and "--batch-size" in err and "--amp auto" in err


def test_existing_checkpoints_need_resume(tmp_path, capsys):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save({"model": {}}, tmp_path / "run" / "checkpoints" / "ckpt-00000001.pt")
    assert cli.main(["train", "--profile", "smoke", "--out", str(tmp_path / "run")]) == 1
    assert "pass --resume" in capsys.readouterr().err


def test_eval_json_is_strict_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DETRLIB_HOME", str(tmp_path / "home"))
    run = tmp_path / "run"
    assert cli.main(["train", "--profile", "smoke", "--max-steps", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    assert cli.main(["eval", "--checkpoint", str(run), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} is not strict JSON"))
    assert {"AP50", "AP", "per_class_AP50"} <= set(metrics)
    assert cli.main(["predict", str(next((tmp_path / "home").rglob("val_000001.jpg"))), "--checkpoint", str(run),
                     "--out", str(tmp_path / "pictures"), "--threshold", "0"]) == 0
    assert (tmp_path / "pictures" / "val_000001_pred.png").stat().st_size > 0
