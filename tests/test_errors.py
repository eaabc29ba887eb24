"""A user's mistakes on the command line: each case gets its exit code and one clear line naming the
file or field, never a traceback, and leaves every file the user had exactly as it was.

The cases run in-process through ``detrlib.cli.main`` (fast); a few run as real processes to show
that no traceback reaches the terminal, and that ``--debug`` shows one.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from detrlib import cli
from vocfiles import obj, write_broken_jpeg, write_voc

ROOT = Path(__file__).resolve().parents[1]


class Context:
    """What a case's set-up needs: its own folder, the shared trained run, a picture the run can
    predict on, and a MonkeyPatch undone after the case."""

    def __init__(self, tmp: Path, run: Path, image: Path, monkeypatch):
        self.tmp, self.run, self.image, self.monkeypatch = tmp, run, image, monkeypatch
        self.held = []  # open files whose locks a case holds

    def copy_run(self) -> Path:
        return Path(shutil.copytree(self.run, self.tmp / "run"))

    def write(self, name: str, data: bytes | str) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def checkpoint(self, name: str, change: Callable[[dict], object]) -> Path:
        """The run's best.pt changed by ``change(state)`` (which may return a new object to save)."""
        state = torch.load(self.run / "checkpoints" / "best.pt", weights_only=True)
        new = change(state)
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state if new is None else new, path)
        return path


@dataclass
class Case:
    id: str
    argv: str  # formatted with {tmp}, {run} and {image}
    code: int
    message: str  # a regular expression the last line of stderr (or, for code 0, the output) matches
    setup: Callable[[Context], list] | None = None  # returns the paths that must not change
    check: Callable[[Context], None] | None = None  # more assertions after the command


def _truncated(ctx):
    data = (ctx.run / "checkpoints" / "best.pt").read_bytes()
    return [ctx.write("cut.pt", data[: len(data) // 2])]


class Evil:
    def __reduce__(self):
        return (os.system, ("echo this ran",))


def _jpeg_with_broken_body(ctx):
    path = write_broken_jpeg(ctx.tmp / "broken.jpg")
    with pytest.raises(OSError, match="broken data stream"):
        Image.open(path).load()  # PIL itself reports the damage
    return [path]


def _holds_lock(ctx):
    (ctx.tmp / "run").mkdir()
    lock = open(ctx.tmp / "run" / "train.lock", "a+")
    lock.write("pid 4242 on another-machine\n")
    lock.flush()
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open file: refused like another process
    ctx.held.append(lock)
    return [ctx.tmp / "run"]


def _full_disk(ctx):
    def no_space(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    ctx.monkeypatch.setattr(torch, "save", no_space)
    return [ctx.run]


def _no_tmp_left(ctx):
    assert not list(ctx.tmp.rglob("*.tmp")) and not list(ctx.run.rglob("*.tmp"))


def _voc(ctx, images, edit: tuple[str, str] = ("", "")):
    """A VOC tree of ``images`` ({id: (width, height, objects)}); ``edit`` replaces a text in a.xml."""
    year_dir = write_voc(ctx.tmp, images=images)
    xml = year_dir / "Annotations" / "a.xml"
    xml.write_text(xml.read_text().replace(*edit))
    return [ctx.tmp / "VOCdevkit"]


class Touches:
    """Unpickling it would create the file ``path``: proof that a pickle ran code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _planted_backbone(ctx):
    """torchvision's resnet18 weights in the hub cache replaced by a pickle that runs a command."""
    ctx.monkeypatch.setenv("TORCH_HOME", str(ctx.tmp / "torch"))
    path = ctx.tmp / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.save({"conv1.weight": torch.zeros(1), "hook": Touches(ctx.tmp / "ran")}, path)
    return [path]


def _nothing_ran(ctx):
    assert not (ctx.tmp / "ran").exists(), "a pickle ran code"


def _copied_run(ctx):
    """A copy of the trained run; its lock file is the only file a command may rewrite."""
    run = ctx.copy_run()
    return [run / "config.json", run / "metrics.jsonl", run / "steps.csv", run / "checkpoints"]


def _stays_in_its_tree(ctx):
    assert not list(ctx.tmp.parent.rglob("*escape*")) and not list(ctx.run.parent.rglob("*escape*")), "a file was written outside"


def _two_pictures(ctx):
    assert sorted(p.name for p in (ctx.tmp / "pics").iterdir()) == ["x-2_pred.png", "x_pred.png"]


DOG = [obj("dog", (11, 6, 40, 30))]
SMOKE = "train --profile smoke --out {tmp}/run"
ON_VOC = (SMOKE + " --data {tmp} --train-sets VOC2007:train --val-sets VOC2007:train "
          "--set model.num_classes=20 --batch-size 1 --max-steps 1")

CASES = [
    # --- configuration: values checked when the config is made, before any data is built ---------
    Case("set-not-a-number", SMOKE + " --set train.lr=abc", 1, r"train.lr must be a number, got 'abc'$"),
    Case("set-unknown-field", SMOKE + " --set train.learning_rate=1e-4", 1, r"train.learning_rate is not a config field \(did you mean train.lr\?\)"),
    Case("set-bare-name", SMOKE + " --set lr=0.1", 1, r"lr is not a config field \(did you mean train.lr\?\)"),
    Case("set-typo", SMOKE + " --set model.decoder_layers=3", 1, r"did you mean model.dec_layers\?"),
    Case("set-without-value", SMOKE + " --set train.lr", 1, r"--set train.lr: expected SECTION.FIELD=VALUE"),
    Case("set-probability", SMOKE + " --set model.dropout=1.5", 1, r"model.dropout must be in \[0, 1\), got 1.5$"),
    Case("set-bool", SMOKE + " --set model.aux_loss=maybe", 1, r"model.aux_loss must be true or false, got 'maybe'$"),
    Case("set-choice", SMOKE + " --set train.amp=fp8", 1, r"train.amp must be one of off, auto, bf16, fp16, got 'fp8'$"),
    Case("set-empty-list", SMOKE + " --set data.train_scales=[]", 1, r"data.train_scales needs at least one value$"),
    Case("set-heads", SMOKE + " --set model.hidden_dim=30", 1, r"model.hidden_dim \(30\) must be divisible by model.nheads \(4\)$"),
    Case("set-huge", SMOKE + " --set model.num_queries=100000000", 1, r"model.num_queries must be in \[1, 10000\]"),
    Case("set-nan", SMOKE + " --set train.lr=NaN", 1, r"train.lr must be a finite number, got nan$"),
    Case("set-device", SMOKE + " --set train.device=tpu", 1, r"train.device must be auto, cpu, cuda, cuda:N or mps"),
    Case("set-longtail", SMOKE + " --set data.longtail=exp0.5", 1, r"data.longtail must be empty, or exp<R> or step<R>"),
    Case("flag-zero-epochs", SMOKE + " --epochs 0", 2, r"argument --epochs: train.epochs must be at least 1, got 0$"),
    Case("flag-zero-batch", SMOKE + " --batch-size 0", 2, r"argument --batch-size: train.batch_size must be at least 1"),
    Case("flag-negative-layers", SMOKE + " --dec-layers -1", 2, r"argument --dec-layers: model.dec_layers must be in \[1, 64\]"),
    Case("flag-zero-queries", SMOKE + " --num-queries 0", 2, r"argument --num-queries: model.num_queries must be in"),
    Case("flag-negative-lr", SMOKE + " --lr -1", 2, r"argument --lr: train.lr must be greater than 0, got -1.0$"),
    Case("flag-threshold", "predict {image} --checkpoint {run} --threshold 2", 2, r"argument --threshold: must be a number in \[0, 1\]"),
    Case("flag-toy-size", "make-toy --root {tmp}/toy --image-size 10", 2, r"data.toy_image_size must be in \[64, 4096\], got 10$"),
    Case("env-profile", "train --out {tmp}/run", 1, r"unknown profile 'fast'.*DETRLIB_PROFILE",
         setup=lambda ctx: ctx.monkeypatch.setenv("DETRLIB_PROFILE", "fast") or []),
    Case("batch-larger-than-data", SMOKE + " --batch-size 100", 1,
         r"an optimizer step takes 100 images .* the training data has 24: it would train nothing"),
    Case("classes-vs-model", SMOKE + " --data {tmp} --train-sets VOC2007:train --val-sets VOC2007:train", 1,
         r"the training data has 20 classes \(aeroplane, bicycle, bird, \.\.\., tvmonitor\) but model.num_classes is 12: "
         r"pass --set model.num_classes=20$", setup=lambda ctx: _voc(ctx, {"a": (60, 40, DOG)})),
    Case("part-nobody-registered", SMOKE + " --set model.decoder_layer_type=deformable", 1,
         r"model.decoder_layer_type must be one of conditional, detr, got 'deformable'$"),
    # --- nothing the user has is overwritten -------------------------------------------------------------
    Case("run-folder-with-metrics", SMOKE, 1, r"run already holds a run \(metrics.jsonl\): pass --resume to continue it",
         setup=lambda ctx: [ctx.write("run/metrics.jsonl", '{"step": 100, "AP50": 0.7}\n')]),
    Case("run-folder-with-best", SMOKE, 1, r"run already holds a run \(checkpoints/best.pt\)",
         setup=lambda ctx: [ctx.write("run/checkpoints/best.pt", (ctx.run / "checkpoints" / "best.pt").read_bytes())]),
    Case("run-folder-with-config", SMOKE, 1, r"run already holds a run \(config.json\)",
         setup=lambda ctx: [ctx.write("run/config.json", (ctx.run / "config.json").read_text())]),
    Case("users-config", SMOKE, 1, r"run/config.json is not a detrlib run's config \(it lacks detrlib's marker\) and a run "
         r"writes its own config.json there: nothing was changed; choose another --out",
         setup=lambda ctx: [ctx.write("run/config.json", '{"my": "settings"}')]),
    Case("users-config-resume", SMOKE + " --resume", 1, r"run/config.json is not a detrlib run's config",
         setup=lambda ctx: [ctx.write("run/config.json", '{"my": "settings"}')]),
    Case("users-lock", SMOKE, 1, r"run/train.lock is not detrlib's lock file, and a run keeps its lock there: nothing was "
         r"changed", setup=lambda ctx: [ctx.write("run/train.lock", "my own notes\n")]),
    Case("resume-damaged-checkpoints", SMOKE + " --resume", 1,
         r"none of the checkpoints of .*run can be read \(checkpoints/ckpt-00000003.pt; .*nothing was changed",
         setup=lambda ctx: [ctx.write("run/checkpoints/ckpt-00000003.pt", b"PK\x03\x04 cut"),
                            ctx.write("run/metrics.jsonl", '{"step": 3}\n')]),
    Case("resume-results-no-checkpoint", SMOKE + " --resume", 1,
         r"run holds a run \(metrics.jsonl, checkpoints/best.pt\) but no checkpoint to resume from: nothing was changed",
         setup=lambda ctx: [ctx.write("run/metrics.jsonl", '{"step": 3}\n'), ctx.write("run/checkpoints/best.pt", b"x")]),
    Case("folder-in-use", SMOKE, 1, r"run is in use by another training process \(pid 4242 on another-machine\)",
         setup=_holds_lock),
    Case("read-only-folder", "train --profile smoke --out /sys/detrlib-run", 1,
         r"/sys/detrlib-run: (Operation not permitted|Permission denied|Read-only file system)$"),
    Case("full-disk", "prune --checkpoint {run} --dec-layers 1 --num-queries 4 --out {tmp}/small.pt", 1,
         r"cannot write .*small.pt: No space left on device; free some space", setup=_full_disk, check=_no_tmp_left),
    Case("predict-same-stem", "predict {tmp}/a/x.jpg {tmp}/b/x.jpg --checkpoint {run} --out {tmp}/pics", 0,
         r"b/x.jpg: \d+ boxes above 0.5 -> .*pics/x-2_pred.png",
         setup=lambda ctx: [ctx.write("a/x.jpg", ctx.image.read_bytes()), ctx.write("b/x.jpg", ctx.image.read_bytes())],
         check=_two_pictures),
    Case("predict-existing-picture", "predict {image} --checkpoint {run} --out {tmp}/pics", 1,
         r"pics/val_000001_pred.png already exists: choose another --out, or move it away first$",
         setup=lambda ctx: [ctx.write("pics/val_000001_pred.png", b"my picture")]),
    Case("eval-existing-results", "eval --checkpoint {run} --save-results {tmp}/results.json", 1,
         r"results.json already exists: choose another --save-results file", setup=lambda ctx: [ctx.write("results.json", "[]")]),
    Case("prune-existing-output", "prune --checkpoint {run} --dec-layers 1 --num-queries 4 --out {tmp}/mine.pt", 1,
         r"mine.pt already exists", setup=lambda ctx: [ctx.write("mine.pt", b"mine")]),
    Case("make-toy-existing", "make-toy --root {tmp} --train 2 --val 1", 1, r"VOCdevkit/VOCtoy already exists: choose another --root",
         setup=lambda ctx: [ctx.write("VOCdevkit/VOCtoy/classes.txt", "mine\n")]),
    # --- damaged or foreign checkpoints ----------------------------------------------------------------------
    Case("ckpt-random-bytes", "eval --checkpoint {tmp}/random.pt", 1, r"random.pt is not a file PyTorch wrote \(random bytes\?\)",
         setup=lambda ctx: [ctx.write("random.pt", np.random.default_rng(0).bytes(5000))]),
    Case("ckpt-truncated", "eval --checkpoint {tmp}/cut.pt", 1, r"cut.pt is a PyTorch checkpoint that is damaged or cut short",
         setup=_truncated),
    Case("ckpt-with-code", "eval --checkpoint {tmp}/evil.pt", 1,
         r"evil.pt holds Python objects beyond tensors \((posix|os).system\), which could run code",
         setup=lambda ctx: [ctx.checkpoint("evil.pt", lambda s: {**s, "hook": Evil()})]),
    Case("ckpt-other-program", "eval --checkpoint {tmp}/other.pt", 1, r"other.pt is a PyTorch file but not a detrlib checkpoint",
         setup=lambda ctx: [ctx.checkpoint("other.pt", lambda s: {"state_dict": s["model"], "epoch": 3})]),
    Case("ckpt-official-weights", "eval --checkpoint {tmp}/detr.pth", 1,
         r"detr.pth is official-format DETR weights, not a detrlib run checkpoint: start training from it with --init-checkpoint",
         setup=lambda ctx: [ctx.checkpoint("detr.pth", lambda s: {"model": s["model"]})]),
    Case("ckpt-empty", "eval --checkpoint {tmp}/empty.pt", 1, r"empty.pt is empty \(0 bytes\)", setup=lambda ctx: [ctx.write("empty.pt", b"")]),
    Case("ckpt-an-image", "eval --checkpoint {image}", 1, r"val_000001.jpg is a JPEG image, not a checkpoint"),
    Case("ckpt-missing", "eval --checkpoint {tmp}/nope.pt", 1, r"checkpoint .*nope.pt does not exist$"),
    Case("ckpt-folder-without-checkpoints", "eval --checkpoint {tmp}", 1, r"holds no readable checkpoint .*train first"),
    Case("ckpt-invalid-config", "eval --checkpoint {tmp}/bad.pt", 1,
         r"bad.pt: its stored config is not valid \(model.num_queries must be in \[1, 10000\], got -3\)",
         setup=lambda ctx: [ctx.checkpoint("bad.pt", lambda s: s["config"]["model"].update(num_queries=-3))]),
    Case("ckpt-config-asks-too-much", "eval --checkpoint {tmp}/big.pt", 1,
         r"big.pt: its stored config is not valid \(model.num_classes must be in \[1, 100000\], got 200000\)",
         setup=lambda ctx: [ctx.checkpoint("big.pt", lambda s: s["config"]["model"].update(num_classes=200000))]),
    Case("ckpt-weights-not-config", "eval --checkpoint {tmp}/wide.pt", 1,
         r"wide.pt: its weights do not match its stored config \(query_embed.weight is \[8, 32\], the config asks for \[8, 64\]\)",
         setup=lambda ctx: [ctx.checkpoint("wide.pt", lambda s: s["config"]["model"].update(hidden_dim=64))]),
    Case("eval-damaged-best", "eval --checkpoint {tmp}/run --json", 0,
         r"warning: .*best.pt is a PyTorch checkpoint that is damaged .*; using the newest readable checkpoint, .*ckpt-0",
         setup=lambda ctx: [ctx.copy_run(), (ctx.tmp / "run/checkpoints/best.pt").write_bytes(b"PK\x03\x04")][:1]),
    Case("predict-damaged-best", "predict {image} --checkpoint {tmp}/run --out {tmp}/pics", 0,
         r"warning: .*best.pt is empty \(0 bytes\), not a checkpoint.*; using the newest readable checkpoint",
         setup=lambda ctx: [ctx.copy_run(), (ctx.tmp / "run/checkpoints/best.pt").write_bytes(b"")][:1]),
    Case("prune-damaged-best", "prune --checkpoint {tmp}/run --dec-layers 1 --num-queries 4 --out {tmp}/small.pt", 0,
         r"warning: .*best.pt is not a file PyTorch wrote.*; using the newest readable checkpoint",
         setup=lambda ctx: [ctx.copy_run(), (ctx.tmp / "run/checkpoints/best.pt").write_bytes(b"\x00garbage")][:1]),
    Case("eval-other-classes", "eval --checkpoint {run} --data {tmp} --split VOC2007:train", 1,
         r"was trained on 12 classes \(red_circle, blue_square, green_triangle, \.\.\., navy_diamond\) but .* has 20 "
         r"\(aeroplane, bicycle, bird, \.\.\., tvmonitor\)", setup=lambda ctx: _voc(ctx, {"a": (60, 40, DOG)})),
    Case("init-checkpoint-damaged", SMOKE + " --init-checkpoint {tmp}/random.pth", 1, r"random.pth is not a file PyTorch wrote",
         setup=lambda ctx: [ctx.write("random.pth", b"\x01\x02 not weights")]),
    # --- pictures and annotations ----------------------------------------------------------------------------
    Case("predict-thin-image", "predict {tmp}/thin.png --checkpoint {run} --out {tmp}/pics", 1,
         r"thin.png is 2000 x 1 pixels: too thin to resize to a longer side of 64 \(data.max_size\)",
         setup=lambda ctx: Image.new("RGB", (2000, 1)).save(ctx.tmp / "thin.png") or []),
    Case("predict-bomb", "predict {image} --checkpoint {run} --out {tmp}/pics", 1,
         r"val_000001.jpg has more pixels than PIL's limit of 1,000 \(a decompression bomb\?\)",
         setup=lambda ctx: ctx.monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000) or []),
    Case("predict-not-an-image", "predict {tmp}/notes.jpg --checkpoint {run} --out {tmp}/pics", 1,
         r"image .*notes.jpg cannot be read \(cannot identify image file", setup=lambda ctx: [ctx.write("notes.jpg", "hello")]),
    Case("predict-missing-image", "predict {tmp}/nope.jpg --checkpoint {run} --out {tmp}/pics", 1, r"image .*nope.jpg not found"),
    Case("predict-broken-jpeg", "predict {tmp}/broken.jpg --checkpoint {run} --out {tmp}/pics", 1,
         r"image .*broken.jpg cannot be decoded \(broken data stream", setup=_jpeg_with_broken_body),
    Case("train-thin-image-skipped", ON_VOC, 0, r"1 records skipped:\n  .*thin.xml: image .*thin.jpg is 2000 x 1 pixels: too thin",
         setup=lambda ctx: _voc(ctx, {"a": (60, 40, DOG), "thin": (2000, 1, [obj("dog", (1, 1, 50, 1))])})),
    Case("train-nan-box", ON_VOC, 1, r"a.xml: <xmin> is 'nan', not a finite number",
         setup=lambda ctx: _voc(ctx, {"a": (60, 40, [obj("dog", ("nan", 6, 40, 30))])})),
    Case("longtail-infinite-size", "longtail --data {tmp} --split VOC2007:train", 1, r"a.xml: <width> is '1e400', not a finite number",
         setup=lambda ctx: _voc(ctx, {"a": (60, 40, DOG)}, edit=("<width>60</width>", "<width>1e400</width>"))),
    Case("stats-json-skipped", "stats --data {tmp} --split VOC2007:train --json", 0,
         r'"file": ".*b.xml",\s+"reason": ".*b.jpg has more pixels than PIL\'s limit of 3,000',
         setup=lambda ctx: ctx.monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000) or _voc(ctx, {"a": (60, 40, DOG), "b": (100, 80, DOG)})),
    Case("stats-json-nan", "stats --data {tmp} --split VOC2007:train --json", 0,
         r'"file": ".*b.xml",\s+"reason": ".*<ymax> is \'inf\', not a finite number',
         setup=lambda ctx: _voc(ctx, {"a": (60, 40, DOG), "b": (60, 40, [obj("dog", (1, 1, 9, "inf"))])})),
    # --- paths from data, configs and checkpoints stay inside their tree ---------------------------------------
    Case("xml-filename-climbs", ON_VOC, 1, r"a.xml: <filename> '../../../secret.jpg' leads out of .*VOC2007/JPEGImages; an "
         r"annotation names a picture in that folder", setup=lambda ctx: _voc(ctx, {"a": (60, 40, DOG)},
                                                                                edit=("a.jpg", "../../../secret.jpg"))),
    Case("xml-filename-absolute", ON_VOC, 1, r"a.xml: <filename> '/etc/hostname' leads out of",
         setup=lambda ctx: _voc(ctx, {"a": (60, 40, DOG)}, edit=("a.jpg", "/etc/hostname"))),
    Case("split-id-climbs", ON_VOC, 1, r"train.txt, line 2: the image id '../../../x' is a path out of .*VOC2007; an id "
         r"names Annotations/<id>.xml inside the year folder: fix the split file",
         setup=lambda ctx: _voc(ctx, {"a": (60, 40, DOG)}) + [ctx.write("VOCdevkit/VOC2007/ImageSets/Main/train.txt", "a\n../../../x\n")]),
    Case("set-names-a-path", SMOKE + " --set data.val_sets=VOCtoy:../../escape", 1,
         r"data.val_sets must be YEAR:split, e.g. VOC2007:test, or a split name \(names, not paths\), got 'VOCtoy:../../escape'$"),
    Case("flag-names-a-path", SMOKE + " --train-sets ../VOCtoy:train", 2, r"argument --train-sets: data.train_sets must be YEAR:split"),
    Case("stats-split-path", "stats --data {tmp} --split ..:train", 1,
         r"the set '..:train' names a path, not a year folder and a split of .*VOCdevkit: write it as YEAR:split",
         setup=lambda ctx: _voc(ctx, {"a": (60, 40, DOG)})),
    Case("ckpt-sets-climb", "eval --checkpoint {tmp}/sets.pt", 1,
         r"sets.pt: its stored config is not valid \(data.val_sets must be YEAR:split, .*got 'VOCtoy:../../../escape'\)",
         setup=lambda ctx: [ctx.checkpoint("sets.pt", lambda s: s["config"]["data"].update(val_sets=["VOCtoy:../../../escape"]))],
         check=_stays_in_its_tree),
    Case("out-empty", "train --profile smoke --out ''", 2, r"argument --out: is empty: name a path \(. for the current folder\)$"),
    Case("predict-out-empty", "predict {image} --checkpoint {run} --out ''", 2, r"argument --out: is empty"),
    Case("backbone-weights-with-code", SMOKE + " --set model.pretrained_backbone=true", 1,
         r"resnet18-f37072fd.pth cannot be read as resnet18's ImageNet weights: it is damaged, or holds Python objects "
         r"beyond tensors, which could run code and detrlib refuses; delete it", setup=_planted_backbone, check=_nothing_ran),
    # --- settings that disagree, and runs resumed with other settings ----------------------------------------
    Case("flag-and-set-disagree", SMOKE + " --max-steps 2 --set train.max_steps=5", 1,
         r"--max-steps 2 and --set train.max_steps=5 disagree: give train.max_steps once$"),
    Case("env-set-under-profile", SMOKE, 1, r"DETRLIB_SET: train.max_step is not a config field \(did you mean train.max_steps\?\)",
         setup=lambda ctx: ctx.monkeypatch.setenv("DETRLIB_SET", '{"train.max_step": 7}') or []),
    Case("resume-other-queries", SMOKE + " --resume --num-queries 5", 1,
         r"run was trained with other settings than this command's: model.num_queries \(the run: 8, this command: 5\); a "
         r"resumed run keeps them, except its budget, learning rates and bookkeeping", setup=_copied_run),
    Case("resume-checkpoint-without-config", SMOKE + " --resume", 1,
         r"ckpt-00000001.pt holds no valid detrlib config \(a config is a dict of sections .*\), so the run cannot be continued",
         setup=lambda ctx: [ctx.checkpoint("run/checkpoints/ckpt-00000001.pt", lambda s: {"model": s["model"]})]),
    Case("resume-finished-names-its-limit", SMOKE + " --resume", 0,
         r"run finished at step 3, stopped by train.max_steps=3: nothing more to train \(a larger train.max_steps trains on\)",
         setup=_copied_run),
    Case("resume-nothing-there", "train --profile smoke --out {tmp}/nope --resume --max-steps 1", 0,
         r"warning: --resume: .*nope does not exist, so there is nothing to resume: a new run starts there"),
    Case("fewer-queries-than-objects", "train --profile smoke --out {tmp}/few --num-queries 2 --max-steps 1", 0,
         r"warning: model.num_queries is 2 but a training picture holds \d+ objects: DETR finds at most one object per "
         r"query; raise --num-queries to \d+ or more"),
    # --- what were bugs --------------------------------------------------------------------------------------
    Case("predict-classes-not-the-head", "predict {image} --checkpoint {tmp}/three.pt --out {tmp}/pics", 1,
         r"three.pt: it holds 3 class names but its class head has 12 classes: the file is damaged or from another program",
         setup=lambda ctx: [ctx.checkpoint("three.pt", lambda s: s.update(classes=["a", "b", "c"]))]),
    Case("eval-device-absent", "eval --checkpoint {run} --device cuda:99", 1,
         r"train.device is cuda:99 but this machine has \d+ CUDA GPUs?: use cpu or auto \(--device cpu\)$"),
    Case("a-bug", "stats --data {tmp} --split VOC2007:train", 1,
         r"unexpected TypeError: boom \(a bug in detrlib\? rerun with --debug and report the traceback\)$",
         setup=lambda ctx: ctx.monkeypatch.setattr("detrlib.data.stats.dataset_stats", _boom) or _voc(ctx, {"a": (60, 40, DOG)})),
]


def _boom(*args):
    raise TypeError("boom")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smoke run of 3 steps (best.pt and ckpt-00000003.pt) and a picture to predict on."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DETRLIB_HOME", str(home))
        run = home / "trained"
        assert cli.main(["train", "--profile", "smoke", "--out", str(run)]) == 0
        yield run, next(home.rglob("val_000001.jpg"))


def digests(paths) -> dict:
    files = [f for p in map(Path, paths) for f in ([p] if p.is_file() else sorted(p.rglob("*"))) if f.is_file()]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def run_case(case: Case, ctx: Context, capsys) -> tuple[int, str, str]:
    protected = (case.setup(ctx) if case.setup else []) + [ctx.run]
    before = digests(protected)
    argv = shlex.split(case.argv.format(tmp=ctx.tmp, run=ctx.run, image=ctx.image))
    try:
        code = cli.main(argv)
    except SystemExit as exit:  # argparse refusing a flag
        code = exit.code
    out, err = capsys.readouterr()
    assert digests(protected) == before, "a file the user had was changed"
    return code, out, err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_mistake_gets_one_clear_line(case, trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DETRLIB_HOME", str(trained[0].parent))
    ctx = Context(tmp_path, *trained, monkeypatch)
    try:
        code, out, err = run_case(case, ctx, capsys)
    finally:
        for lock in ctx.held:
            lock.close()
    assert "Traceback" not in err and "weights_only=False" not in out + err
    assert code == case.code, err
    if code:
        last = err.rstrip("\n").rsplit("\n", 1)[-1]  # the message: one line, the command's name first
        assert last.startswith(f"python -m detrlib {case.argv.split()[0]}: "), err
        assert re.search(case.message, last), f"{case.message!r} not in {last!r}"
    else:
        assert re.search(case.message, out + err), f"{case.message!r} not in {out + err!r}"
    if case.check:
        case.check(ctx)
    assert not list(tmp_path.rglob("*.tmp")), "a temporary file was left behind"


def test_there_are_enough_cases():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


def detrlib(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DETRLIB_PROFILE": "smoke", **(env or {})}
    return subprocess.run([sys.executable, "-m", "detrlib", *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_a_real_process_prints_one_line_and_debug_prints_the_traceback(tmp_path):
    (tmp_path / "random.pt").write_bytes(b"\x00\x01 not a checkpoint")
    quiet = detrlib("eval", "--checkpoint", str(tmp_path / "random.pt"))
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr
    assert quiet.stderr.splitlines() == [f"python -m detrlib eval: {tmp_path}/random.pt is not a file PyTorch wrote "
                                         "(random bytes?): it is not a checkpoint; pass another checkpoint, or a run "
                                         "folder to use its newest readable one"]
    for loud in (detrlib("eval", "--checkpoint", str(tmp_path / "random.pt"), "--debug"),
                 detrlib("eval", "--checkpoint", str(tmp_path / "random.pt"), env={"DETRLIB_DEBUG": "1"})):
        assert loud.returncode == 1 and "Traceback (most recent call last)" in loud.stderr
        assert "CheckpointError: " in loud.stderr.splitlines()[-1]
    bad_flag = detrlib("train", "--set", "model.num_queries=-1", "--out", str(tmp_path / "run"))
    assert bad_flag.returncode == 1 and "Traceback" not in bad_flag.stderr
    assert bad_flag.stderr.strip() == "python -m detrlib train: model.num_queries must be in [1, 10000], got -1"
    assert not (tmp_path / "run").exists()
