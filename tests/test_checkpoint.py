"""load_official_checkpoint on files written here in the official format ({"model": state_dict})."""
import argparse
import hashlib

import pytest
import torch

from detrlib.checkpoint import load_official_checkpoint
from detrlib.config import ModelConfig
from detrlib.model import build_model

SOURCE = ModelConfig(backbone="resnet18", hidden_dim=32, nheads=4, enc_layers=2, dec_layers=6,
                     dim_feedforward=64, dropout=0.0, num_queries=10, num_classes=9)


def small(**changes):
    return ModelConfig(**{**SOURCE.__dict__, **changes})


@pytest.fixture
def official(tmp_path):
    """A source model and its weights saved the way detr-r50-e632da11.pth is."""
    torch.manual_seed(0)
    model = build_model(SOURCE)
    path = tmp_path / "detr-small.pth"
    torch.save({"model": model.state_dict()}, path)
    return model, path


def test_same_config_loads_every_tensor(official):
    source, path = official
    model = build_model(SOURCE)
    report = load_official_checkpoint(model, path)
    assert len(report.loaded) == len(source.state_dict())
    assert not (report.sliced or report.dropped or report.new)
    for (name, a), b in zip(model.state_dict().items(), source.state_dict().values()):
        assert torch.equal(a, b), name


def test_smaller_target_replaces_the_head_slices_queries_and_drops_layers(official):
    source, path = official
    model = build_model(small(num_classes=4, num_queries=6, dec_layers=4))
    head_before = model.class_embed.weight.clone()
    report = load_official_checkpoint(model, path)
    src = source.state_dict()

    assert report.sliced == [("query_embed.weight", (10, 32), (6, 32))]
    assert torch.equal(model.query_embed.weight, src["query_embed.weight"][:6])
    dropped = dict(report.dropped)
    assert "class head replaced (10 outputs in the checkpoint, 5 in the model)" == dropped["class_embed.weight"]
    layer_keys = [k for k in src if k.startswith(("transformer.decoder.layers.4.", "transformer.decoder.layers.5."))]
    assert layer_keys and all(k in dropped for k in layer_keys)
    assert {k for k, _ in report.new} == {"class_embed.weight", "class_embed.bias"}
    assert torch.equal(model.class_embed.weight, head_before)  # fresh, not a copy of COCO's rows
    assert torch.equal(model.transformer.decoder.layers[3].linear1.weight,
                       src["transformer.decoder.layers.3.linear1.weight"])
    # every tensor of both sides is accounted for exactly once
    assert len(report.loaded) + len(report.sliced) + len(report.dropped) == len(src)
    assert len(report.loaded) + len(report.sliced) + len(report.new) == len(model.state_dict())
    text = str(report)
    assert "decoder layer 5 is beyond the model's 4 decoder layers" in text and "sliced" in text


def test_trainable_batchnorm_target_reports_its_new_counters(official):
    _, path = official
    model = build_model(small(frozen_bn=False, frozen_stages=0))
    report = load_official_checkpoint(model, path)
    new = [k for k, _ in report.new]
    assert new and all(k.endswith("num_batches_tracked") for k in new)
    assert torch.equal(model.backbone[0].body.bn1.running_var,
                       torch.load(path, weights_only=True)["model"]["backbone.0.body.bn1.running_var"])


@pytest.mark.parametrize("target, match", [
    (small(hidden_dim=64), r"does not fit this model \(\d+ tensors\):\n  transformer.encoder.layers.0"),
    (small(num_queries=20), r"query_embed.weight: checkpoint \[10, 32\], model \[20, 32\]"),
    (small(backbone="resnet34"), "backbone.0.body.layer1.2.conv1.weight: in the model, not in the checkpoint"),
    (small(enc_layers=1, backbone_stages=3), "backbone.0.body.layer4.0.conv1.weight: in the checkpoint, not"),
])
def test_another_architecture_is_refused_naming_the_tensors(official, target, match):
    _, path = official
    model = build_model(target)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        load_official_checkpoint(model, path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched


def test_files_not_in_the_official_format_are_refused(tmp_path):
    model = build_model(SOURCE)
    pickled = tmp_path / "args.pth"
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(lr=1)}, pickled)
    with pytest.raises(ValueError, match=r"args.pth holds Python objects beyond tensors \(argparse.Namespace\)"):
        load_official_checkpoint(model, pickled)
    listed = tmp_path / "list.pth"
    torch.save([1, 2], listed)
    with pytest.raises(ValueError, match=r"not in the official format \{'model': state_dict\}"):
        load_official_checkpoint(model, listed)
    with pytest.raises(FileNotFoundError, match="missing.pth not found"):
        load_official_checkpoint(model, tmp_path / "missing.pth")


def test_download_checks_the_hash_in_the_file_name(official, tmp_path, monkeypatch):
    monkeypatch.setenv("DETRLIB_HOME", str(tmp_path / "home"))
    _, path = official
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    good = tmp_path / f"detr-small-{digest[:8]}.pth"
    good.write_bytes(path.read_bytes())
    report = load_official_checkpoint(build_model(SOURCE), good.as_uri())
    assert report.source == good.name and (tmp_path / "home" / "downloads" / "checkpoints" / good.name).exists()

    wrong = "0" if digest[0] != "0" else "1"
    bad = tmp_path / f"detr-small-{wrong}{digest[1:8]}.pth"
    bad.write_bytes(path.read_bytes())
    with pytest.raises(RuntimeError, match="sha256 mismatch"):
        load_official_checkpoint(build_model(SOURCE), bad.as_uri())
    assert not list((tmp_path / "home" / "downloads" / "checkpoints").glob(f"{bad.name}*"))
    with pytest.raises(ValueError, match="cannot be verified"):
        load_official_checkpoint(build_model(SOURCE), path.as_uri())


@pytest.mark.slow
def test_coco_r50_into_the_voc_model(tmp_path):
    """The full profile's case: COCO DETR-R50 -> 20 VOC classes, 4 decoder layers, 50 queries."""
    path = tmp_path / "detr-r50.pth"
    torch.save({"model": build_model(ModelConfig(num_classes=91)).state_dict()}, path)
    model = build_model(ModelConfig(num_classes=20, dec_layers=4, num_queries=50))
    report = load_official_checkpoint(model, path)
    assert len(report.loaded) + len(report.sliced) + len(report.dropped) == 458
    assert report.sliced == [("query_embed.weight", (100, 256), (50, 256))]
    assert len(report.dropped) == 2 + 2 * 18 and {k for k, _ in report.new} == {"class_embed.weight", "class_embed.bias"}
    assert model.class_embed.out_features == 21
