"""The GPU chapters' code path, run on the CPU at toy size, so a Colab reader is never the first to run
it: the ``gpu`` and ``full`` profiles' settings (DETR-R50, 6 encoder / 4 decoder layers, 50 queries,
denoising, from an official-format COCO checkpoint; a long-tailed VOC-format tree with VOC2007 and
VOC2012 folders, the 20 VOC class names and 500 x 375 JPEGs; fp16 with a GradScaler as on a T4, and
bf16), with smaller images and 2 steps; then evaluation and prediction from the command line."""
import json

import pytest
import torch

from detrlib import budget
from detrlib.checkpoint import load_checkpoint, load_latest, load_official_checkpoint
from detrlib.cli import main
from detrlib.config import profile_settings
from detrlib.data.toy import make_voc_like
from detrlib.data.voc import VOC_CLASSES
from detrlib.runfolder import read_metrics
from detrlib.model import build_model

OFFICIAL_URL = "https://dl.fbaipublicfiles.com/detr/detr-r50-e632da11.pth"


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return make_voc_like(tmp_path_factory.mktemp("voc"),
                         {"VOC2007": {"trainval": 16, "test": 10}, "VOC2012": {"trainval": 12}})


def test_gpu_and_full_profiles_are_the_reference_model_at_two_budgets():
    gpu, full = profile_settings("gpu"), profile_settings("full")
    for cfg in (gpu, full):
        m, t = cfg.model, cfg.train
        assert (m.backbone, m.enc_layers, m.dec_layers, m.num_queries, m.num_classes) == ("resnet50", 6, 4, 50, 20)
        assert (m.dn_groups, m.dn_label_noise, m.dn_box_noise, t.amp) == (5, 0.2, 0.4, "auto")
        assert t.init_checkpoint == OFFICIAL_URL and cfg.data.longtail == "exp50"
    assert gpu.data.train_sets == ("VOC2007:trainval",) and gpu.data.val_sets == ("VOC2007:test",)
    assert gpu.data.val_subset == 500 and full.data.val_subset == 0
    assert full.data.train_sets == ("VOC2007:trainval", "VOC2012:trainval")
    assert gpu.train.max_steps > 0 and 0 < gpu.train.max_minutes <= 30
    assert full.train.epochs == 50 and not full.train.max_steps and not full.train.max_minutes


def test_every_chapter_fits_a_colab_session_by_its_own_estimate():
    cfg = profile_settings("gpu")
    for row in budget.readme_table(cfg):
        assert row["alone"] <= 45, row
        assert row["after the earlier chapters"] <= row["alone"]
    run = budget.run_minutes(cfg)
    assert 10 <= run <= cfg.train.max_minutes + budget.eval_minutes(cfg)  # about a quarter of an hour, capped


def test_the_readme_shows_the_chapters_estimated_minutes():
    from book_layout import ROOT

    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- budget-table", 1)[1].split("<!-- /budget-table -->")[0]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[3:] if line.startswith("|")]
    expected = budget.readme_table(profile_settings("gpu"))
    assert rows == [[r["chapter"], str(r["alone"]), str(r["after the earlier chapters"])] for r in expected], (
        "README's table of Colab minutes differs from detrlib.budget.readme_table: update the README")


def test_the_load_report_names_the_new_head_the_dropped_layers_and_queries_and_denoising(official_checkpoint):
    report = str(load_official_checkpoint(build_model(profile_settings("gpu").model), official_checkpoint))
    assert "class head replaced (92 outputs in the checkpoint, 21 in the model)" in report
    assert "decoder layer 4 is beyond the model's 4 decoder layers" in report
    assert "decoder layer 5 is beyond the model's 4 decoder layers" in report
    assert "queries 50-99 dropped" in report
    assert "denoising queries (chapter 5)" in report


def shrunk(profile: str, voc, checkpoint, amp: str) -> list[str]:
    """``--set`` options: the profile as it is, but small images, batch 2, 2 steps, on the CPU."""
    changes = {"data.root": str(voc), "data.download": False, "data.train_scales": [64, 80], "data.max_size": 100,
               "data.val_size": 64, "data.num_workers": 0, "train.batch_size": 2, "train.max_steps": 2,
               "train.warmup_steps": 1, "train.checkpoint_every": 0, "train.init_checkpoint": str(checkpoint),
               "train.device": "cpu", "train.amp": amp}
    if profile == "gpu":
        changes["data.val_subset"] = 6
    return [arg for key, value in changes.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


@pytest.mark.slow
@pytest.mark.parametrize("profile, amp", [("gpu", "fp16"), ("full", "bf16")])
def test_the_gpu_code_path_trains_evaluates_and_predicts_on_a_cpu(profile, amp, voc, official_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--profile", profile, "--out", str(out), *shrunk(profile, voc, official_checkpoint, amp)]) == 0
    printed = capsys.readouterr().out
    assert "class head replaced" in printed and "queries 50-99 dropped" in printed and "denoising queries" in printed
    last = read_metrics(out)[-1]
    assert last["step"] == 2 and last["stopped"] == "max_steps" and 0 <= last["AP50"] <= 1
    assert all(torch.isfinite(torch.tensor(last[k])) for k in ("train_loss", "train_loss_bbox_dn"))
    state = load_latest(out / "checkpoints")
    assert state["finished"] and state["config"]["profile"] == profile
    assert (state["scaler"] is not None) == (amp == "fp16")  # fp16 needs loss scaling, bf16 does not
    if amp == "fp16":  # random weights overflow fp16 at the first scale: the scaler skipped and lowered it
        assert state["scaler"]["scale"] < 2.0**16

    assert main(["eval", "--checkpoint", str(out), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0 <= metrics["AP50"] <= 1 and set(metrics["per_class_AP50"]) <= set(VOC_CLASSES)
    assert main(["eval", "--checkpoint", str(out)]) == 0
    subset = 6 if profile == "gpu" else 10  # the run's fixed subset, or the whole VOC2007 test
    assert capsys.readouterr().out.startswith(f"{subset} images of ")
    assert main(["eval", "--checkpoint", str(out), "--voc07"]) == 0
    assert capsys.readouterr().out.startswith("10 images of ")  # the VOC protocol takes every test image

    picture = next((voc / "VOCdevkit" / "VOC2007" / "JPEGImages").glob("*.jpg"))
    assert main(["predict", str(picture), "--checkpoint", str(out), "--out", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / f"{picture.stem}_pred.png").stat().st_size > 0


def test_a_time_cap_ends_the_run_cleanly_and_a_higher_cap_continues_it(tmp_path, monkeypatch):
    from detrlib.engine import train

    monkeypatch.setenv("DETRLIB_RUNS", str(tmp_path / "runs"))
    cfg = profile_settings("smoke").replace(**{"train.max_steps": 0, "train.epochs": 2, "train.max_minutes": 1e-4})
    out = train(cfg, progress=False)
    history = read_metrics(out)
    assert len(history) == 1 and history[0]["step"] == 1 and history[0]["stopped"] == "max_minutes"
    assert load_latest(out / "checkpoints")["finished"]

    # the cap, the workers, the device and the bookkeeping place a run but do not make its weights: same folder
    placed = cfg.replace(**{"train.max_minutes": 60.0, "data.num_workers": 1, "train.device": "cpu",
                            "train.checkpoint_every": 7, "train.keep_last": 1, "train.eval_every": 2})
    assert train(placed, progress=False) == out
    history = read_metrics(out)
    per_epoch = cfg.train.steps_per_epoch(cfg.data.toy_train, 1)  # the capped epoch is finished, then the second
    assert [h["step"] for h in history] == [1, 2 * per_epoch] and history[-1]["stopped"] == "epochs"
    assert cfg.replace(**{"train.lr": 1e-3}).key() != cfg.key()  # a setting that changes the weights: a new run


def test_a_resumed_run_counts_the_minutes_it_already_spent(tmp_path, monkeypatch):
    import detrlib.engine as engine

    cfg = profile_settings("smoke").replace(**{"train.max_steps": 0, "train.epochs": 2, "train.max_minutes": 60,
                                               "train.checkpoint_every": 3})
    out = tmp_path / "run"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the session ends during the first evaluation

    with monkeypatch.context() as m:
        m.setattr(engine, "evaluate_model", killed)
        with pytest.raises(KeyboardInterrupt):
            engine.train(cfg, out, progress=False)
    path = out / "checkpoints" / "ckpt-00000006.pt"
    state = load_checkpoint(path)
    assert not state["finished"] and read_metrics(out) == []
    state["wall_time"] = 3600.5  # the first session had used the whole hour
    torch.save(state, path)
    engine.train(cfg, out, progress=False)
    history = read_metrics(out)
    assert [(h["step"], h["stopped"]) for h in history] == [(6, "max_minutes")]  # no step more, but evaluated
    assert load_latest(out / "checkpoints")["finished"]


def test_a_gpu_profile_without_cuda_names_the_quick_profile(monkeypatch, capsys):
    monkeypatch.setattr("detrlib.config.has_cuda", lambda: False)
    for profile in ("gpu", "full"):
        assert main(["train", "--profile", profile]) == 1
        err = capsys.readouterr().err
        assert f"the {profile} profile trains DETR-R50 and needs a CUDA GPU" in err and "--profile quick" in err
        assert len(err.strip().splitlines()) == 1


def test_measured_gpu_tables_are_read_labelled_and_their_absence_said(tmp_path):
    from detrlib.bench.gpu import read_results, results_tables, write_results

    assert results_tables(tmp_path).startswith("No GPU measurement is in ")
    rows = [{"config": "R50 6/4/50 DN5", "profile": "gpu", "precision": "amp float16 + GradScaler",
             "train steps/s": 2.5}]
    write_results(rows, tmp_path / "gpu-tesla-t4.json", "python -m detrlib bench gpu --out results/gpu-tesla-t4.json")
    (result,) = read_results(tmp_path)
    assert result["rows"] == rows and result["command"].endswith("gpu-tesla-t4.json") and result["date"]
    text = results_tables(tmp_path)
    assert f"measured {result['date']} by `python -m detrlib bench gpu" in text and "R50 6/4/50 DN5" in text
    assert budget.measured_step_seconds("gpu", tmp_path) is None  # this machine is no T4
    result["gpu"] = "Tesla T4"
    (tmp_path / "gpu-tesla-t4.json").write_text(json.dumps(result))
    assert budget.measured_step_seconds("gpu", tmp_path) == pytest.approx(0.4)
