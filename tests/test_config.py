from pathlib import Path

import pytest

from detrlib.config import PROFILES, Config, get_profile, profile_settings, resolve_profile


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
    with pytest.raises(KeyError, match="model.decoder_layers"):
        cfg.replace(**{"model.decoder_layers": 1})
    with pytest.raises(ValueError, match="unknown train config field"):
        Config.from_dict({"train": {"learning_rate": 1}})


def test_repository_file_prefers_the_checkout_then_downloads_once_and_checks_the_digest(tmp_path, monkeypatch):
    import hashlib

    import torch

    from detrlib.config import BRANCH, repository_file

    monkeypatch.setenv("DETRLIB_HOME", str(tmp_path))
    assert repository_file("results/quick-ablation.json").parent.parent == Path(__file__).resolve().parents[1]
    urls = []

    def fake_download(url, dst, progress=True):
        urls.append(url)
        Path(dst).write_bytes(b"weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    digest = hashlib.sha256(b"weights").hexdigest()
    path = repository_file("checkpoints/not-in-the-checkout.pt", digest)
    assert path == tmp_path / "checkpoints" / "not-in-the-checkout.pt" and path.read_bytes() == b"weights"
    assert urls == [f"https://raw.githubusercontent.com/detrlib/detr-book/{BRANCH}/checkpoints/not-in-the-checkout.pt"]
    assert repository_file("checkpoints/not-in-the-checkout.pt", digest) == path and len(urls) == 1  # cached
    with pytest.raises(ValueError, match="SHA-256 .* expected 0+: the download was damaged"):
        repository_file("checkpoints/not-in-the-checkout.pt", "0" * 64)
    assert not path.exists()  # a damaged file is not kept


def test_detrlib_set_changes_the_settings_a_chapter_runs(monkeypatch):
    monkeypatch.setenv("DETRLIB_PROFILE", "smoke")
    monkeypatch.setenv("DETRLIB_SET", '{"train.max_steps": 7, "data.train_scales": [32, 48]}')
    cfg = get_profile()
    assert cfg.train.max_steps == 7 and cfg.data.train_scales == (32, 48) and cfg.profile == "smoke"
    assert profile_settings("smoke").train.max_steps == 3  # showing a recipe: as it is
    monkeypatch.setenv("DETRLIB_SET", "train.max_steps=7")
    with pytest.raises(ValueError, match="DETRLIB_SET is not a JSON object"):
        get_profile()
