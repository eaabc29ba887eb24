"""Chapter 8's measurements: the variants, their commands, the ablate command and the committed results."""
import json

import pytest

from detrlib import cli
from detrlib.ablation import _summary, load_results, measured_results, table, variants
from detrlib.config import get_profile

GROUPS = {"ablation": ["vanilla", "+DN", "+pruning", "+AMP"],
          "remedies": ["baseline", "repeat-factor sampling", "class-balanced loss", "focal loss"]}


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("DETRLIB_PROFILE", raising=False)


def by_name(cfg, steps=2000):
    return {v.name: v for v in variants(cfg, steps)}


def test_variants_scale_the_seed_shapes_onto_the_quick_model(no_env):
    cfg = get_profile("quick")
    plan = by_name(cfg)
    assert [v.name for v in plan.values() if v.group == "ablation"] == GROUPS["ablation"]
    assert [v.name for v in plan.values() if v.group == "remedies"] == GROUPS["remedies"]
    vanilla, dn, pruned, amp = (plan[n].config(cfg, 0) for n in GROUPS["ablation"])
    assert (vanilla.model.dec_layers, vanilla.model.num_queries, vanilla.model.dn_groups) == (3, 40, 0)
    assert (dn.model.dec_layers, dn.model.num_queries, dn.model.dn_groups) == (3, 40, 5)
    # the whole recipe is the quick profile itself: its runs are the plain command's runs
    assert amp.key() == cfg.replace(**{"train.seed": 0}).key()
    assert plan["baseline"].config(cfg, 1).key() == pruned.replace(**{"train.seed": 1}).key()
    assert amp.train.amp == "auto" and amp.replace(**{"train.amp": "off"}).key() == pruned.key()
    # remedies change one thing each; repeat-factor sampling keeps the budget in steps
    rfs = plan["repeat-factor sampling"].config(cfg, 0)
    assert rfs.data.repeat_factor_t > 0 and rfs.train.max_steps == 2000
    assert plan["class-balanced loss"].config(cfg, 0).train.class_loss == "balanced"
    assert plan["focal loss"].config(cfg, 0).train.class_loss == "focal"
    assert all(v.config(cfg, 0).train.max_steps == 0 for n, v in plan.items() if n != "repeat-factor sampling")


def test_the_full_profile_ablation_ends_at_the_seed_recipe(no_env):
    cfg = get_profile("full")
    plan = by_name(cfg)
    vanilla = plan["vanilla"].config(cfg, 42)
    assert (vanilla.model.dec_layers, vanilla.model.num_queries, vanilla.model.dn_groups) == (6, 100, 0)
    assert plan["+AMP"].config(cfg, 42).key() == cfg.key()  # the full profile, seed 42: the seed's recipe


def test_each_command_trains_exactly_its_variant(no_env):
    cfg = get_profile("quick")
    for v in variants(cfg, 2000):
        for seed in (0, 1):
            args = cli.build_parser().parse_args(v.command("quick", seed).split()[3:])
            assert args.resume and cli._config_from_args(args).key() == v.config(cfg, seed).key(), v.name


def test_budget_counts_steps_like_the_engine(no_env):
    cfg = get_profile("quick")
    assert (cfg.train.epochs, cfg.train.batch_size) == (9, 16)
    assert cfg.train.total_steps(2000) == 9 * 125
    assert cfg.replace(**{"train.grad_accum_steps": 2}).train.total_steps(2000) == 9 * 62
    assert cfg.replace(**{"train.max_steps": 7}).train.total_steps(2000) == 7


def test_summary_ignores_missing_values():
    assert _summary([0.2, 0.4, None, float("nan")]) == pytest.approx({"mean": 0.3, "std": 0.1414213562})
    assert _summary([0.5]) == {"mean": 0.5, "std": 0.0}
    assert _summary([None]) == {"mean": None, "std": None}


def test_the_committed_results_cover_every_variant_with_two_seeds(no_env):
    results = load_results(measured_results("quick-ablation.json"))
    cfg = get_profile("quick")  # measured with the recipe the chapters run, not an older one
    assert results["config"] == cfg.describe() and results["budget_steps"] == cfg.train.total_steps(cfg.data.toy_train)
    assert results["profile"] == "quick" and len(results["seeds"]) >= 2
    assert results["command"].startswith("python -m detrlib ablate --profile quick")
    assert {"cpu", "torch"} <= set(results["machine"]) and results["date"]
    for group, names in GROUPS.items():
        assert [r["variant"] for r in table(results, group)] == names
    for row in results["rows"]:
        assert len(row["AP50"]["seeds"]) == len(results["seeds"]) == len(row["runs"]) == len(row["commands"])
        assert all(0 <= ap <= 1 for ap in row["AP50"]["seeds"]) and row["s_per_image"] > 0
        assert all(step == results["budget_steps"] for step in row["steps"]), row["name"]
    with pytest.raises(FileNotFoundError, match="python -m detrlib ablate"):
        load_results("no-such-results.json")


@pytest.mark.slow
def test_ablate_command_on_the_smoke_profile(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DETRLIB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DETRLIB_RUNS", raising=False)
    out = tmp_path / "ablation.json"
    argv = ["ablate", "--profile", "smoke", "--seeds", "0", "--repeats", "1", "--out", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "ablation (smoke profile" in printed and "focal loss" in printed
    results = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} is not strict JSON"))
    assert results["command"] == f"python -m detrlib ablate --profile smoke --seeds 0 --repeats 1 " \
                                 f"--rfs-threshold 0.25 --out {out}"
    rows = {r["name"]: r for r in results["rows"]}
    assert list(rows) == GROUPS["ablation"] + GROUPS["remedies"]
    assert rows["baseline"]["runs"] == rows["+pruning"]["runs"]  # one configuration, one run
    assert rows["vanilla"]["parameters"] > rows["+pruning"]["parameters"]
    assert set(results["train_counts"]) == set(results["train_image_share"]) == set(rows["vanilla"]["per_class_AP50"])
    runs = sorted(p.name for p in (tmp_path / "home" / "runs").iterdir())
    assert len(runs) == 7  # eight variants, baseline = +pruning
    # a second call reuses every run
    assert cli.main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "home" / "runs").iterdir()) == runs
    again = json.loads(out.read_text())
    assert [r["AP50"] for r in again["rows"]] == [r["AP50"] for r in results["rows"]]


def test_the_full_profile_is_the_seeds_recipe(no_env):
    """What `python -m detrlib train --profile full --out DIR --resume` trains (chapter 8)."""
    args = cli.build_parser().parse_args(["train", "--profile", "full", "--out", "/drive/run", "--resume"])
    cfg = cli._config_from_args(args)
    m, t, d = cfg.model, cfg.train, cfg.data
    assert (m.backbone, m.enc_layers, m.dec_layers, m.num_queries, m.num_classes) == ("resnet50", 6, 4, 50, 20)
    assert m.dn_groups == 5 and t.amp == "auto" and t.init_checkpoint.endswith("detr-r50-e632da11.pth")
    assert d.train_sets == ("VOC2007:trainval", "VOC2012:trainval") and d.val_sets == ("VOC2007:test",)
    assert d.longtail == "exp50" and d.download and (t.epochs, t.lr_drop) == (50, 40)
