from pathlib import Path

import pytest

from detrlib.config import PROFILES, Config, ConfigError, get_profile, profile_settings, resolve_profile


def test_env_variable_overrides_the_parameter(monkeypatch):
    monkeypatch.setenv("DETRLIB_PROFILE", "smoke")
    assert resolve_profile("full") == "smoke"
    monkeypatch.delenv("DETRLIB_PROFILE")
    assert resolve_profile("full") == "full"


def test_profile_settings_ignore_the_env_variable(monkeypatch):
    monkeypatch.setenv("DETRLIB_PROFILE", "smoke")
    assert get_profile("full").profile == "smoke"  # choosing what to run: the variable wins
    full = profile_settings("full")  # showing a recipe: the one named
    assert full.profile == "full" and full.model.backbone == "resnet50"
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        profile_settings("fast")


def test_auto_picks_quick_without_a_gpu_and_gpu_with_one(monkeypatch):
    monkeypatch.delenv("DETRLIB_PROFILE", raising=False)
    monkeypatch.setattr("detrlib.config.has_cuda", lambda: False)
    assert resolve_profile(None) == "quick"
    monkeypatch.setattr("detrlib.config.has_cuda", lambda: True)
    assert resolve_profile(None) == "gpu"  # a chapter on a GPU: the session-sized profile, never the full recipe


def test_unknown_profile_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("DETRLIB_PROFILE", "fast")
    with pytest.raises(ValueError, match="unknown profile 'fast'.*DETRLIB_PROFILE"):
        resolve_profile()


@pytest.mark.parametrize("name", PROFILES)
def test_profiles_round_trip_through_dicts(name, monkeypatch):
    monkeypatch.delenv("DETRLIB_PROFILE", raising=False)
    cfg = get_profile(name)
    assert cfg.profile == name
    again = Config.from_dict(cfg.to_dict())
    assert again == cfg and again.key() == cfg.key()


def test_replace_changes_the_key_and_rejects_unknown_fields(monkeypatch):
    monkeypatch.delenv("DETRLIB_PROFILE", raising=False)
    cfg = get_profile("quick")
    smaller = cfg.replace(**{"model.dec_layers": 1})
    assert smaller.model.dec_layers == 1 and cfg.model.dec_layers == 2
    assert smaller.key() != cfg.key()
    with pytest.raises(ConfigError, match=r"model.decoder_layers is not a config field \(did you mean model.dec_layers\?\)"):
        cfg.replace(**{"model.decoder_layers": 1})
    with pytest.raises(ConfigError, match="train.learning_rate is not a config field"):
        Config.from_dict({"train": {"learning_rate": 1}})


def test_repository_file_prefers_the_checkout_then_downloads_once_and_checks_the_digest(tmp_path, monkeypatch):
    import hashlib

    from detrlib.config import BRANCH
    from detrlib.data.download import repository_file
    from detrlib.data.download import DownloadError

    monkeypatch.setenv("DETRLIB_HOME", str(tmp_path))
    assert repository_file("results/quick-ablation.json").parent.parent == Path(__file__).resolve().parents[1]
    urls = []

    def fake_fetch(url, part, timeout):
        urls.append(url)
        part.write_bytes(b"weights")

    monkeypatch.setattr("detrlib.data.download._fetch", fake_fetch)
    digest = hashlib.sha256(b"weights").hexdigest()
    path = repository_file("checkpoints/not-in-the-checkout.pt", digest)
    assert path == tmp_path / "checkpoints" / "not-in-the-checkout.pt" and path.read_bytes() == b"weights"
    assert urls == [f"https://raw.githubusercontent.com/detrlib/detr-book/{BRANCH}/checkpoints/not-in-the-checkout.pt"]
    assert repository_file("checkpoints/not-in-the-checkout.pt", digest) == path and len(urls) == 1  # cached
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        repository_file("checkpoints/not-in-the-checkout.pt", "0" * 64)
    assert not path.exists() and not path.with_name(path.name + ".part").exists()  # a damaged file is not kept


def test_a_field_is_checked_by_its_annotation_and_the_ranges():
    from dataclasses import dataclass

    from detrlib.config import check_fields

    @dataclass
    class Section:  # a new section gets the checks for free
        size: int = 1
        rate: float = 0.5
        names: tuple[str, ...] = ("a",)
        flag: bool = False

        def __post_init__(self):
            check_fields(self, "demo")

    assert Section(rate=1, names=["b"]) == Section(rate=1.0, names=("b",))  # JSON's lists and ints normalised
    for changes, message in [({"size": "x"}, "demo.size must be a whole number, got 'x'"),
                             ({"size": True}, "demo.size must be a whole number, got True"),
                             ({"size": float("inf")}, "demo.size must be a whole number, got inf"),  # not an error
                             ({"size": float("nan")}, "demo.size must be a whole number, got nan"),  # of int()'s
                             ({"rate": -1}, "demo.rate must be at least 0, got -1.0"),
                             ({"rate": float("inf")}, "demo.rate must be a finite number, got inf"),
                             ({"names": []}, "demo.names needs at least one value"),
                             ({"names": [1]}, "demo.names must be text, got 1"),
                             ({"flag": "yes"}, "demo.flag must be true or false, got 'yes'")]:
        with pytest.raises(ConfigError) as caught:
            Section(**changes)
        assert str(caught.value) == message


def test_settings_are_read_by_the_fields_type():
    from detrlib.config import parse_setting

    assert parse_setting("data.root=2007") == ("data.root", "2007")  # text stays text
    assert parse_setting('train.amp="fp16"') == ("train.amp", "fp16")  # a JSON text is read as one
    assert parse_setting('data.val_sets=["VOC2007:test"]') == ("data.val_sets", ["VOC2007:test"])
    assert parse_setting("data.train_sets=VOC2007:trainval") == ("data.train_sets", "VOC2007:trainval")
    assert parse_setting("train.lr=3e-4") == ("train.lr", 3e-4)
    assert parse_setting("data.train_scales=[96, 128]") == ("data.train_scales", [96, 128])
    cfg = get_profile("smoke").replace(**dict([parse_setting("data.train_sets=VOC2007:trainval")]))
    assert cfg.data.train_sets == ("VOC2007:trainval",)  # one value for a list field: a list of one
    with pytest.raises(ConfigError, match="expected SECTION.FIELD=VALUE"):
        parse_setting("train.lr")


def test_a_stored_config_is_checked_like_any_other():
    d = get_profile("smoke").to_dict()
    d["model"]["num_queries"] = 10**9
    with pytest.raises(ConfigError, match=r"model.num_queries must be in \[1, 10000\], got 1000000000"):
        Config.from_dict(d)
    with pytest.raises(ConfigError, match="optimizer is not a config section"):
        Config.from_dict({**get_profile("smoke").to_dict(), "optimizer": {}})
    with pytest.raises(ConfigError, match="profile 'fast' is not one of"):
        Config.from_dict({**get_profile("smoke").to_dict(), "profile": "fast"})


def test_settings_are_settled_once_in_the_written_order_into_a_frozen_config(monkeypatch):
    from dataclasses import FrozenInstanceError

    from detrlib.config import settle

    monkeypatch.setenv("DETRLIB_PROFILE", "smoke")
    monkeypatch.setenv("DETRLIB_SET", '{"train.max_steps": 7, "train.lr": 0.01}')
    assert settle(default="quick").profile == "smoke"  # the variable overrides a chapter's PROFILE
    cfg = settle(default="quick", named="quick", sets=["train.max_steps=9"], flags={"train.seed": ("--seed", 3)})
    assert cfg.profile == "quick"  # --profile overrides the variable
    assert (cfg.train.lr, cfg.train.max_steps, cfg.train.seed) == (0.01, 9, 3)  # DETRLIB_SET, then --set and flags
    with pytest.raises(FrozenInstanceError):
        cfg.train.lr = 1.0  # everything after the settling reads the same object
    toy = settle(named="quick", flags={"data.root": ("--data", "voc")})
    assert toy.data.train_sets == ("VOC2007:trainval", "VOC2012:trainval") and toy.data.val_sets == ("VOC2007:test",)


def test_detrlib_set_changes_the_settings_a_chapter_runs(monkeypatch):
    monkeypatch.setenv("DETRLIB_PROFILE", "smoke")
    monkeypatch.setenv("DETRLIB_SET", '{"train.max_steps": 7, "data.train_scales": [32, 48]}')
    cfg = get_profile()
    assert cfg.train.max_steps == 7 and cfg.data.train_scales == (32, 48) and cfg.profile == "smoke"
    assert profile_settings("smoke").train.max_steps == 3  # showing a recipe: as it is
    monkeypatch.setenv("DETRLIB_SET", "train.max_steps=7")
    with pytest.raises(ValueError, match="DETRLIB_SET is not a JSON object"):
        get_profile()
    monkeypatch.setenv("DETRLIB_SET", '{"train.max_step": 7}')
    with pytest.raises(ConfigError, match=r"DETRLIB_SET: train.max_step is not a config field \(did you mean train.max_steps\?\)"):
        get_profile()
