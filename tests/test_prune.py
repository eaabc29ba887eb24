"""Pruning: the first K decoder layers answer as they did inside the big model, the kept queries are
the ones asked for, usage counts matched objects, and a pruned run fine-tunes and reloads."""
import pytest
import torch

from detrlib.checkpoint import load_trained
from detrlib.config import get_profile
from detrlib.data import build_dataset, build_loader
from detrlib.engine import train
from detrlib.model import build_model
from detrlib.prune import finetune_config, pick_queries, prune, pruning_grid, query_usage, save_pruned
from detrlib.runfolder import read_metrics


def big_config():
    cfg = get_profile("smoke")
    return cfg.replace(**{"model.dec_layers": 3, "model.num_queries": 12})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained smoke run with 3 decoder layers and 12 queries, and its validation loader."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DETRLIB_HOME", str(home))
        cfg = big_config()
        out = train(cfg, home / "big", progress=False)
        val = build_dataset(cfg.data, "val")
        yield out, cfg, val, build_loader(val, 4, train=False)


def test_the_first_layers_give_the_big_models_intermediate_answer():
    cfg = big_config()
    torch.manual_seed(0)
    big = build_model(cfg.model).eval()
    pruned = prune(big, 2, cfg.model.num_queries, config=cfg)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        inner = big(images)["aux_outputs"][1]
        out = pruned.model(images)
    assert torch.allclose(out["pred_logits"], inner["pred_logits"], atol=1e-5)
    assert torch.allclose(out["pred_boxes"], inner["pred_boxes"], atol=1e-5)
    assert len(pruned.model.transformer.decoder.layers) == 2 and pruned.config.model.dec_layers == 2
    dropped = [name for name, _ in pruned.report.dropped]
    assert dropped and all(name.startswith("transformer.decoder.layers.2.") for name in dropped)
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(pruned.model.parameters(), big.parameters()))


def test_kept_queries_are_the_first_or_the_most_used():
    usage = torch.tensor([0.0, 5, 1, 5, 9, 0])
    assert pick_queries(6, 3) == [0, 1, 2]
    assert pick_queries(6, 3, "usage", usage) == [1, 3, 4]  # ties go to the lower index, order kept
    cfg = big_config().replace(**{"model.num_queries": 6})
    big = build_model(cfg.model)
    pruned = prune(big, 3, 3, by="usage", config=cfg.model, usage=usage)
    assert pruned.queries == [1, 3, 4] and pruned.config.num_queries == 3
    assert torch.equal(pruned.model.query_embed.weight, big.query_embed.weight[[1, 3, 4]].detach())


def test_bad_requests_are_refused_with_a_reason():
    cfg = big_config()
    big = build_model(cfg.model)
    with pytest.raises(ValueError, match="needs config="):
        prune(big, 2, 4)
    with pytest.raises(ValueError, match="dec_layers must be between 1 and the model's 3"):
        prune(big, 4, 4, config=cfg)
    with pytest.raises(ValueError, match="num_queries must be between 1 and the model's 12"):
        prune(big, 2, 13, config=cfg)
    with pytest.raises(ValueError, match="needs loader="):
        prune(big, 2, 4, by="usage", config=cfg)
    with pytest.raises(ValueError, match="'first' or 'usage'"):
        pick_queries(12, 4, by="often")


@pytest.mark.slow
def test_usage_counts_every_validation_object_once(run):
    out, cfg, val, loader = run
    model, _, _ = load_trained(out)
    usage = query_usage(model, loader)
    objects = sum(len(target["labels"]) for _, target in val)
    assert usage.shape == (cfg.model.num_queries,) and usage.sum().item() == objects


@pytest.mark.slow
def test_a_pruned_run_saves_reloads_and_fine_tunes(run, tmp_path):
    out, cfg, _, loader = run
    pruned = prune(out, 2, 6, by="usage", loader=loader)
    path = save_pruned(pruned, tmp_path / "pruned.pt")
    model, loaded_cfg, _ = load_trained(path)
    assert (loaded_cfg.model.dec_layers, loaded_cfg.model.num_queries) == (2, 6)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), pruned.model.state_dict().values()))

    ft = finetune_config(pruned.config, path, steps=2)
    assert ft.train.max_steps == 2 and ft.train.lr == pytest.approx(cfg.train.lr * 0.1)
    ft_out = train(ft, tmp_path / "ft", progress=False)
    assert read_metrics(ft_out)[-1]["step"] == 2


def test_the_grid_maps_the_seeds_shape_onto_the_profiles_model(monkeypatch):
    monkeypatch.delenv("DETRLIB_PROFILE", raising=False)
    for name in ("smoke", "quick"):
        cfg = get_profile(name)
        layers, queries = pruning_grid(cfg)
        assert (layers[1], queries[1]) == (cfg.model.dec_layers, cfg.model.num_queries)
        assert layers == sorted(layers, reverse=True) and queries == sorted(queries, reverse=True)
    assert pruning_grid(get_profile("full")) == ([6, 4, 2], [100, 50, 25])


@pytest.mark.slow
def test_the_prune_command_writes_a_checkpoint_that_eval_reads(run, tmp_path, capsys):
    from detrlib.cli import main

    out, _, _, _ = run
    target = tmp_path / "p.pt"
    assert main(["prune", "--checkpoint", str(out), "--dec-layers", "1", "--num-queries", "4", "--by", "usage",
                 "--out", str(target)]) == 0
    printed = capsys.readouterr().out
    assert "pruned to 1 decoder layers and 4 queries" in printed and str(target) in printed
    assert main(["eval", "--checkpoint", str(target), "--json"]) == 0
    assert '"AP50"' in capsys.readouterr().out
